//! Seeds given as a DNS name (a Kubernetes headless service): the node resolves the
//! name again while it runs, so a node that lost every peer finds them at their new
//! addresses. A real DNS server (dnsmasq) answers the namespaces; its records change
//! during the test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::netns::*;
use crate::common::node::*;
use crate::common::sse::*;

const NAME: &str = "peers.sse.test";

/// dnsmasq on the host's bridge address answering [`NAME`] from a hosts file, and
/// every namespace's `resolv.conf` pointing at it (`ip netns exec` mounts
/// `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`).
struct Dns {
    dir: PathBuf,
    etc: Vec<PathBuf>,
    server: KillOnDrop,
    pid: u32,
}

impl Dns {
    fn start(hosts: &Hosts, count: usize, answer: &str) -> Dns {
        let dir = std::env::temp_dir().join(format!("sse-dns-{}", hosts.ns(0)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let etc: Vec<PathBuf> = (1..=count)
            .map(|i| PathBuf::from("/etc/netns").join(hosts.ns(i)))
            .collect();
        for dir in &etc {
            std::fs::create_dir_all(dir).expect("/etc/netns/<ns>");
            let conf = format!(
                "nameserver {}\noptions timeout:1 attempts:2\n",
                hosts.host_addr()
            );
            std::fs::write(dir.join("resolv.conf"), conf).expect("resolv.conf");
        }
        let records = dir.join("records");
        std::fs::write(&records, format!("{answer} {NAME}\n")).expect("records");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
            ])
            .arg(format!("--listen-address={}", hosts.host_addr()))
            .arg(format!("--addn-hosts={}", records.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        let pid = child.id();
        let dns = Dns {
            dir,
            etc,
            server: KillOnDrop(child),
            pid,
        };
        // dnsmasq binds its socket a moment after it starts. A node started before
        // then fails its first lookup of the seed name, and chitchat looks again only
        // a minute later: wait until a namespace resolves the name.
        dns.wait_resolves(&hosts.ns(1), answer);
        dns
    }

    /// Waits until [`NAME`] resolves to `answer` inside namespace `ns`, through the
    /// same resolver configuration the nodes use.
    fn wait_resolves(&self, ns: &str, answer: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "getent", "hosts", NAME])
                .stderr(Stdio::null())
                .output()
                .expect("ip netns exec getent");
            if String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .is_some_and(|addr| addr == answer)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not answer {NAME} with {answer} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Points [`NAME`] at `answer` from now on (dnsmasq rereads its hosts files on
    /// SIGHUP).
    fn answer(&self, answer: &str) {
        std::fs::write(self.dir.join("records"), format!("{answer} {NAME}\n")).expect("records");
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = &self.server;
        for dir in self.etc.iter().chain([&self.dir]) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether dnsmasq can run here; without it the test skips, unless CI requires it.
fn dnsmasq_or_skip() -> bool {
    let found = Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message = "dnsmasq not found (Debian package dnsmasq-base)";
        if std::env::var("SSE_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    found
}

/// The HTTP addresses of the members the node at `base` holds live.
async fn live_members(base: &str) -> Vec<String> {
    let status = crate::common::net::get_json(&client(), &format!("{base}/status")).await;
    let members = status["gossip"]["members"].as_array().cloned();
    members
        .unwrap_or_default()
        .iter()
        .filter(|m| m["alive"] == true)
        .filter_map(|m| Some(m["http_addr"].as_str()?.to_owned()))
        .collect()
}

/// Waits until the node at `base` holds the node at `addr` live.
async fn wait_sees(base: &str, addr: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let live = live_members(base).await;
        if live.iter().any(|m| m.starts_with(&format!("{addr}:"))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} did not see {addr} live within {within:?}: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Node 1 knows its peers only as `peers.sse.test`. Its peer dies and comes back
/// at another address, which only DNS says: node 1 finds it there by itself (chitchat
/// resolves seed names again every 60 s), and events flow between them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_every_peer_finds_them_again_at_the_address_dns_now_gives() {
    if !dnsmasq_or_skip() {
        return;
    }
    let Some(hosts) = hosts_or_skip(3) else {
        return;
    };
    let dns = Dns::start(&hosts, 3, &hosts.addr(2));
    let seeds = format!("{NAME}:42000");
    let _node1 = hosts.node_seeded(1, &seeds, &[]);
    let node2 = hosts.node_seeded(2, &seeds, &[]);
    // The first join already goes through the name: nothing else says where node 2 is.
    wait_for_members_at(&hosts.url(1, ""), 2).await;

    // Node 2's pod goes; its replacement comes up at another address, and only DNS
    // says so. Seeded by the name, which now resolves to itself, it is alone.
    drop(node2);
    dns.answer(&hosts.addr(3));
    let _node3 = hosts.node_seeded(3, &seeds, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alone = live_members(&hosts.url(3, "")).await;
    assert_eq!(alone.len(), 1, "node 3 starts alone: {alone:?}");

    // Node 1 resolves the name again and gossips with the new address.
    wait_sees(&hosts.url(3, ""), &hosts.addr(1), Duration::from_secs(120)).await;
    wait_sees(&hosts.url(1, ""), &hosts.addr(3), Duration::from_secs(10)).await;
    let mut on_3 = subscribe(hosts.url(3, "/channel/dns"), None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = client()
        .post(hosts.url(1, "/channel/dns"))
        .json(&json!({"data": "found again"}))
        .send()
        .await
        .expect("publish");
    assert!(response.status().is_success());
    let (events, _, _) = collect(&mut on_3, 1, Duration::from_secs(10)).await;
    assert_eq!(
        events.first().map(|e| e.data.as_str()),
        Some("\"found again\"")
    );
}
