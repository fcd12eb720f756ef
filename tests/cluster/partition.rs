//! A real network partition: three nodes in their own network namespaces on a
//! bridge; one node's link is cut while both sides publish, then healed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::common::*;

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Namespaces `ns1..ns3` on a bridge, removed on drop.
struct Hosts {
    tag: String,
    subnet: String,
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        // Unique per test, also for tests running at once in one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("s{}{n}", pid % 100_000),
            subnet: format!("10.77.{}", 20 + (pid + 37 * n) % 200),
        };
        ip(&["link", "add", &hosts.bridge(), "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", hosts.subnet),
            "dev",
            &hosts.bridge(),
        ])?;
        ip(&["link", "set", &hosts.bridge(), "up"])?;
        for i in 1..=3 {
            let (ns, host, peer) = (hosts.ns(i), hosts.veth(i), format!("{}p{i}", hosts.tag));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &hosts.bridge()])?;
            ip(&["link", "set", &host, "up"])?;
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", hosts.addr(i)),
                "dev",
                &peer,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &peer, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("{}ns{i}", self.tag)
    }
    fn veth(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }
    fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }
    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:8080{path}", self.addr(i))
    }

    /// Runs a node inside namespace `i`; every node uses the same ports.
    fn node(&self, i: usize, extra: &[&str]) -> KillOnDrop {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns(i),
                env!("CARGO_BIN_EXE_sse-cluster"),
                "start",
            ])
            .arg(format!("--http.server.address={}", self.addr(i)))
            .args([
                "--http.server.port=8080",
                "--gossip.port=42000",
                "--http.client.timeout=2s",
            ])
            .arg(format!("--gossip.hosts={}:42000", self.addr(1)))
            .args(extra);
        quiet_unless_node_log(&mut command);
        KillOnDrop(command.spawn().expect("start node in namespace"))
    }

    /// Publishes `{"origin": 1, "n": n}` on node `i` from the host's side.
    async fn publish_from_host(&self, i: usize, channel: &str, n: u64) {
        let response = client()
            .post(self.url(i, &format!("/channel/{channel}")))
            .json(&serde_json::json!({"data": {"origin": 1, "n": n}}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]).unwrap();
    }

    fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "up"]).unwrap();
    }

    /// Publishes from inside namespace `i` (a client in that part of the network).
    fn publish_inside(&self, i: usize, channel: &str, data: &str) {
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(i),
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "-XPOST",
            ])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &format!("{{\"data\":{data}}}"),
            ])
            .arg(self.url(i, &format!("/channel/{channel}")))
            .status()
            .expect("curl");
        assert!(status.success(), "publish inside namespace {i}");
    }

    /// Subscribes from inside namespace `i`.
    fn subscribe_inside(
        &self,
        i: usize,
        channel: &str,
    ) -> (KillOnDrop, mpsc::UnboundedReceiver<Option<SseEvent>>) {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "curl", "-sN"])
            .arg(self.url(i, &format!("/channel/{channel}")))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl subscriber");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut parser = SseParser::default();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(event) = parser.line(&line) {
                    let _ = tx.send(Some(event));
                }
            }
            let _ = tx.send(None);
        });
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move { child.wait().await });
        (KillOnDrop::pid(pid), rx)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=3 {
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

enum KillOnDrop {
    Child(std::process::Child),
    Pid(u32),
}

#[allow(non_snake_case)]
fn KillOnDrop(child: std::process::Child) -> KillOnDrop {
    KillOnDrop::Child(child)
}

impl KillOnDrop {
    fn pid(pid: u32) -> KillOnDrop {
        KillOnDrop::Pid(pid)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        match self {
            KillOnDrop::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            KillOnDrop::Pid(pid) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}

/// The namespaces, or `None` (after saying why) where the kernel or user cannot
/// make them; with `SSE_REQUIRE_NETNS=1` (CI) that is a failure instead.
fn hosts_or_skip() -> Option<Hosts> {
    match Hosts::create() {
        Ok(hosts) => Some(hosts),
        Err(reason) => {
            let message = format!(
                "network namespaces unavailable ({reason}); this test needs root and a kernel that allows `ip netns add`"
            );
            if std::env::var("SSE_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_catches_up_exactly_once_after_the_network_heals() {
    let Some(hosts) = hosts_or_skip() else { return };
    let _nodes: Vec<KillOnDrop> = (1..=3).map(|i| hosts.node(i, &[])).collect();
    for i in 1..=3 {
        wait_for_members_at(&hosts.url(i, ""), 3).await;
    }
    // Subscribers: on nodes 1 and 2 from the host, on node 3 from inside its namespace.
    let mut on_1 = subscribe(hosts.url(1, "/channel/p"), None).await;
    let mut on_2 = subscribe(hosts.url(2, "/channel/p"), None).await;
    let (_curl, mut on_3) = hosts.subscribe_inside(3, "p");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Before, during and after the cut, both sides publish.
    let mut n = 0;
    for _ in 0..10 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
    }
    hosts.cut(3);
    for _ in 0..20 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // While cut, node 1's subscribers see none of node 3's new events.
    let (during, _, _) = collect(&mut on_1, 100, Duration::from_millis(500)).await;
    assert!(
        during
            .iter()
            .filter(|e| e.data.contains("\"origin\":3"))
            .count()
            <= 10,
        "node 3's events crossed a cut link"
    );
    hosts.heal(3);
    for _ in 0..10 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
    }
    let expected = HashMap::from([(1, n), (3, n)]);
    let mut first = during;
    let (rest, named, _) = collect(
        &mut on_1,
        2 * n as usize - first.len(),
        Duration::from_secs(30),
    )
    .await;
    first.extend(rest);
    assert!(
        named.is_empty(),
        "no gap expected within the relay queue bound: {named:?}"
    );
    check_exactly_once(&first, &expected);
    for (name, rx) in [("node 2", &mut on_2), ("node 3", &mut on_3)] {
        let (events, named, _) = collect(rx, 2 * n as usize, Duration::from_secs(30)).await;
        assert!(named.is_empty(), "{name}: unexpected signals {named:?}");
        check_exactly_once(&events, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_longer_than_the_queue_bound_gets_an_explicit_gap() {
    let Some(hosts) = hosts_or_skip() else { return };
    let _nodes: Vec<KillOnDrop> = [1, 3]
        .iter()
        .map(|i| hosts.node(*i, &["--relay.queueEvents=5"]))
        .collect();
    for i in [1, 3] {
        wait_for_members_at(&hosts.url(i, ""), 2).await;
    }
    let (_curl, mut on_3) = hosts.subscribe_inside(3, "g");
    tokio::time::sleep(Duration::from_millis(300)).await;
    hosts.publish_from_host(1, "g", 1).await;
    let (first, _, _) = collect(&mut on_3, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);

    // Cut node 3 off long enough for its relay stream to time out (2 s), while node 1
    // accepts four times what its queue for peers holds.
    hosts.cut(3);
    for n in 2..=21 {
        hosts.publish_from_host(1, "g", n).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    hosts.heal(3);
    hosts.publish_from_host(1, "g", 22).await;

    // Wait for the last event; everything before it arrives first.
    let mut events = Vec::new();
    let mut named = Vec::new();
    while !events
        .iter()
        .any(|e: &SseEvent| e.data.contains("\"n\":22"))
    {
        let (more, signals, ended) = collect(&mut on_3, 1, Duration::from_secs(20)).await;
        assert!(
            !(ended || more.is_empty() && signals.is_empty()),
            "stalled: {named:?} {events:?}"
        );
        events.extend(more);
        named.extend(signals);
    }
    let gap = named
        .iter()
        .find(|e| e.event.as_deref() == Some("gap"))
        .unwrap_or_else(|| panic!("expected an explicit gap, got {named:?} and {events:?}"));
    let upto = serde_json::from_str::<serde_json::Value>(&gap.data).unwrap()["upto"]
        .as_u64()
        .unwrap();
    let ns: Vec<u64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Node 1's events have sequence = n here, so the gap names exactly what is missing:
    // what follows it is the queued tail, contiguous, each once.
    assert!(
        (6..22).contains(&upto),
        "the queue held at most 5 events: gap up to {upto}"
    );
    assert_eq!(
        ns,
        ((upto + 1)..=22).collect::<Vec<_>>(),
        "the tail after the gap"
    );
}
