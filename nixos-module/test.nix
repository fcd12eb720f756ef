# Three NixOS machines run services.sse-cluster and form one cluster. A publish on one
# machine reaches EventSource-style subscribers (curl -N) on the others; one machine's
# network is cut and healed, then the cluster is split two against one by firewall
# rules (each side keeps publishing) and healed, and every subscriber still gets every
# event exactly once, in the order its origin accepted them. Last, each machine is
# restarted in turn (SIGTERM, drain) while a publisher goes round the machines and
# subscribers resume on the next one: nothing is lost, nothing repeated, no reset.
#
# Commands the script starts through systemd-run run with the service manager's PATH,
# which on NixOS holds no curl: they are named by store path.
#
# Run with `nix build .#checks.x86_64-linux.cluster -L` (needs KVM and network access
# to fetch nixpkgs).
{ pkgs, module }:

pkgs.testers.runNixOSTest {
  name = "sse-cluster";

  defaults =
    { config, pkgs, ... }:
    {
      imports = [ module ];

      services.sse-cluster = {
        enable = true;
        openFirewall = true;
        # The same list on every node, this one included.
        hosts = [
          "node1:42000"
          "node2:42000"
          "node3:42000"
        ];
        secretKeyFile = "/run/sse-cluster-secret";
        # Test VMs have a second interface (the driver's, 10.0.2.15 on every machine);
        # peers must use the address of the shared VLAN.
        advertiseAddress = config.networking.primaryIPAddress;
        # Short keep-alives make a stalled stream visible quickly.
        keepAlive = "2s";
        logLevel = "debug";
      };

      # A test-only secret, written at boot outside the Nix store the way a secrets
      # manager would.
      systemd.tmpfiles.rules = [ "f /run/sse-cluster-secret 0400 root root - vm-test-shared-secret" ];

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  nodes = {
    node1 = { };
    node2 = { };
    node3 = { };
  };

  testScript = ''
    import re
    import time

    nodes = [node1, node2, node3]
    event_line = re.compile(r'^data: \{"n":(\d+)\}$')


    def publish(machine, n):
        body = '{"data":{"n":%d}}' % n
        reply = machine.succeed(
            "curl -sSf -X POST http://localhost:8080/channel/news "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
        assert '"duplicate":false' in reply, reply


    def subscribe(machine, name):
        machine.succeed(
            f"systemd-run --unit={name} "
            f"${pkgs.runtimeShell} -c 'exec ${pkgs.curl}/bin/curl -sSN http://localhost:8080/channel/news > /tmp/{name}.log'"
        )
        # The stream opens at once with a retry: line, before any event.
        machine.wait_until_succeeds(f"grep -q '^retry:' /tmp/{name}.log", timeout=30)


    def received(machine, name):
        log = machine.succeed(f"cat /tmp/{name}.log")
        return [int(m.group(1)) for m in map(event_line.match, log.splitlines()) if m]


    def split(machine, others):
        """Drops every packet between machine and others, both ways (the others still
        reach each other)."""
        for other in others:
            machine.succeed(
                f"${pkgs.iptables}/bin/iptables -I INPUT 1 -s {other.name} -j DROP",
                f"${pkgs.iptables}/bin/iptables -I OUTPUT 1 -d {other.name} -j DROP",
            )


    def heal(machine, others):
        for other in others:
            machine.succeed(
                f"${pkgs.iptables}/bin/iptables -D INPUT -s {other.name} -j DROP",
                f"${pkgs.iptables}/bin/iptables -D OUTPUT -d {other.name} -j DROP",
            )


    def wait_for(machine, name, expected):
        with machine.nested(f"waiting for {sorted(expected)} on {name}"):
            for _ in range(120):
                if set(received(machine, name)) >= expected:
                    return
                time.sleep(1)
            raise AssertionError(f"{name} got {received(machine, name)}, wanted {sorted(expected)}")


    start_all()
    for m in nodes:
        m.wait_for_unit("sse-cluster.service")
        m.wait_for_open_port(8080)

    with subtest("the secret is read at start and not in the unit or the store"):
        node1.fail("systemctl cat sse-cluster | grep -q vm-test-shared-secret")
        node1.fail(
            "grep -q vm-test-shared-secret "
            "$(systemctl show -p ExecStart --value sse-cluster | grep -o '/nix/store/[^ ;]*')"
        )
        node1.succeed("tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value sse-cluster)/environ | grep -q '^GOSSIP_SECRET_KEY=vm-test-shared-secret$'")

    with subtest("three nodes form one cluster"):
        for m in nodes:
            m.wait_until_succeeds(
                "curl -sSf http://localhost:8080/status | jq -e '.gossip.member_count == 3'",
                timeout=120,
            )

    with subtest("a publish on one machine reaches subscribers on the others"):
        subscribe(node1, "sub1")
        subscribe(node2, "sub2")
        subscribe(node3, "sub3")
        # Subscriptions may take a gossip round to be known cluster-wide: publish a
        # named probe event (not counted below) until every subscriber has seen one.
        subscribers = [(node1, "sub1"), (node2, "sub2"), (node3, "sub3")]
        for _ in range(60):
            node1.succeed(
                "curl -sSf -X POST http://localhost:8080/channel/news "
                "-H 'Content-Type: application/json' -d '{\"event\":\"probe\",\"data\":0}'"
            )
            if all(m.execute(f"grep -q '^event: probe' /tmp/{name}.log")[0] == 0 for m, name in subscribers):
                break
            time.sleep(1)
        else:
            raise AssertionError("probe events never reached every subscriber")
        for n in [1, 2, 3]:
            publish(node1, n)
        for m, name in subscribers:
            wait_for(m, name, {1, 2, 3})

    with subtest("a cut machine gets what it missed once the network heals"):
        node3.block()
        for n in [4, 5, 6, 7, 8]:
            publish(node1, n)
        for n in [9, 10, 11]:
            publish(node2, n)
        # node3 keeps serving its own subscribers while cut off.
        publish(node3, 100)
        wait_for(node1, "sub1", set(range(1, 12)))
        wait_for(node2, "sub2", set(range(1, 12)))
        wait_for(node3, "sub3", {1, 2, 3, 100})
        assert set(received(node3, "sub3")) == {1, 2, 3, 100}, received(node3, "sub3")
        node3.unblock()
        everything = set(range(1, 12)) | {100}
        for m, name in subscribers:
            wait_for(m, name, everything)

    with subtest("a two-against-one split: each side keeps delivering, and heals"):
        # node1 alone against node2 and node3, which still reach each other. Unlike
        # block(), every machine stays on the network; only the paths across the
        # split are cut.
        split(node1, [node2, node3])
        for n in [200, 201, 202]:
            publish(node1, n)
        for n in [12, 13, 14]:
            publish(node2, n)
        for n in [101, 102, 103]:
            publish(node3, n)
        wait_for(node1, "sub1", everything | {200, 201, 202})
        majority = everything | {12, 13, 14, 101, 102, 103}
        wait_for(node2, "sub2", majority)
        wait_for(node3, "sub3", majority)
        assert set(received(node1, "sub1")) == everything | {200, 201, 202}, received(node1, "sub1")
        assert set(received(node2, "sub2")) == majority, received(node2, "sub2")
        heal(node1, [node2, node3])
        everything = majority | {200, 201, 202}
        for m, name in subscribers:
            wait_for(m, name, everything)

    with subtest("every subscriber got every event exactly once, in origin order"):
        # Leave time for a redelivery to show up as a duplicate.
        time.sleep(10)
        # Which machine accepted each event.
        origins = {
            "node1": lambda n: 1 <= n <= 8 or 200 <= n < 300,
            "node2": lambda n: 9 <= n <= 99,
            "node3": lambda n: 100 <= n < 200,
        }
        for m, name in subscribers:
            got = received(m, name)
            assert sorted(got) == sorted(everything), f"{name}: {got}"
            for origin, accepted_by in origins.items():
                mine = [n for n in got if accepted_by(n)]
                assert mine == sorted(mine), f"{name} reordered {origin}'s events: {got}"

    with subtest("a rolling restart with drain loses nothing and repeats nothing"):
        # Subscribers that reconnect to the next machine with the last id they read,
        # as an EventSource behind a load balancer does.
        def resuming_subscriber(machine, name, order):
            log = f"/tmp/{name}.log"
            machine.succeed(
                f"systemd-run --unit={name} "
                f"${pkgs.runtimeShell} -c '"
                f"while true; do for node in {' '.join(order)}; do "
                f"last=$(${pkgs.gnugrep}/bin/grep \"^id: \" {log} 2>/dev/null | ${pkgs.coreutils}/bin/tail -n 1 | ${pkgs.coreutils}/bin/cut -c 5-); "
                f"if [ -n \"$last\" ]; then ${pkgs.curl}/bin/curl -sSN -H \"Last-Event-ID: $last\" http://$node:8080/channel/roll >> {log}; "
                f"else ${pkgs.curl}/bin/curl -sSN http://$node:8080/channel/roll >> {log}; fi; "
                f"${pkgs.coreutils}/bin/sleep 0.3; done; done'"
            )
            machine.wait_until_succeeds(f"grep -q '^retry:' {log}", timeout=30)

        rolling = [(node1, "roll1"), (node2, "roll2"), (node3, "roll3")]
        names = [m.name for m in nodes]
        for i, (m, name) in enumerate(rolling):
            resuming_subscriber(m, name, names[i:] + names[:i])

        # A publisher that goes round the machines and retries a refused publish
        # (503 while draining, or refused while down) on the next one with the same
        # id: the idempotency key keeps it exactly once.
        def publish_anywhere(n):
            body = '{"id":"roll-%d","data":{"n":%d}}' % (n, n)
            for k in range(12):
                m = nodes[(n + k) % 3]
                status, _ = m.execute(
                    "curl -sSf -X POST http://localhost:8080/channel/roll "
                    f"-H 'Content-Type: application/json' -d '{body}'"
                )
                if status == 0:
                    return
                time.sleep(0.5)
            raise AssertionError(f"no machine accepted event {n}")

        # Give the subscriptions a gossip round before the first event.
        time.sleep(3)
        n = 1000
        for m in nodes:
            for _ in range(5):
                publish_anywhere(n)
                n += 1
            # SIGTERM: the machine drains (readiness off, publishes refused, peers
            # pull its outbox), ends its streams and starts again.
            m.succeed("systemctl restart --no-block sse-cluster")
            for _ in range(10):
                publish_anywhere(n)
                n += 1
            m.wait_for_unit("sse-cluster.service")
            m.wait_for_open_port(8080)
            for other in nodes:
                other.wait_until_succeeds(
                    "curl -sSf http://localhost:8080/status | jq -e '.gossip.member_count == 3'",
                    timeout=120,
                )
        for _ in range(5):
            publish_anywhere(n)
            n += 1
        published = set(range(1000, n))
        for m, name in rolling:
            wait_for(m, name, published)
        time.sleep(5)
        for m, name in rolling:
            got = [k for k in received(m, name) if k >= 1000]
            assert sorted(got) == sorted(published), f"{name} got {got}"
            m.fail(f"grep -E '^event: (reset|gap)' /tmp/{name}.log")
  '';
}
