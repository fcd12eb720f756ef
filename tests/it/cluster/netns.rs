//! Network namespaces for tests that need a real network between a node and its
//! clients or peers: namespaces on a bridge, links cut and healed from the host.
//! Creating them needs root; without it a test skips (loudly), unless
//! `SSE_REQUIRE_NETNS=1` (CI) makes that a failure.

use std::process::{Command, Stdio};

use tokio::io::AsyncReadExt;

use crate::common::node::*;
use crate::common::sse::*;

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
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

/// Namespaces `ns1..nsN` on a bridge, removed on drop.
pub(crate) struct Hosts {
    tag: String,
    subnet: String,
    count: usize,
}

impl Hosts {
    fn create(count: usize) -> Result<Hosts, String> {
        // Unique per test, also for tests running at once in one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("s{}{n}", pid % 100_000),
            subnet: format!("10.77.{}", 20 + (pid + 37 * n) % 200),
            count,
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
        for i in 1..=count {
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

    pub(crate) fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    pub(crate) fn ns(&self, i: usize) -> String {
        format!("{}ns{i}", self.tag)
    }
    pub(crate) fn veth(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }
    pub(crate) fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }
    /// The host's own address on the bridge (every namespace reaches it).
    pub(crate) fn host_addr(&self) -> String {
        format!("{}.254", self.subnet)
    }
    pub(crate) fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:8080{path}", self.addr(i))
    }

    /// Runs a node inside namespace `i`; every node uses the same ports, and finds
    /// the others through node 1.
    pub(crate) fn node(&self, i: usize, extra: &[&str]) -> KillOnDrop {
        self.node_seeded(i, &format!("{}:42000", self.addr(1)), extra)
    }

    /// Runs a node inside namespace `i` with `seeds` as its `--gossip.hosts`.
    pub(crate) fn node_seeded(&self, i: usize, seeds: &str, extra: &[&str]) -> KillOnDrop {
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
            .arg(format!("--gossip.hosts={seeds}"))
            .args(extra);
        quiet_unless_node_log(&mut command);
        KillOnDrop(command.spawn().expect("start node in namespace"))
    }

    /// Publishes `{"origin": 1, "n": n}` on node `i` from the host's side.
    pub(crate) async fn publish_from_host(&self, i: usize, channel: &str, n: u64) {
        let data = serde_json::json!({"origin": 1, "n": n});
        publish_to(&self.url(i, ""), channel, data).await;
    }

    pub(crate) fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]).unwrap();
    }

    pub(crate) fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "up"]).unwrap();
    }

    /// Publishes from inside namespace `i` (a client in that part of the network).
    pub(crate) fn publish_inside(&self, i: usize, channel: &str, data: &str) {
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

    /// Opens a TCP connection from inside namespace `i` to node `node`'s HTTP port,
    /// writes `request` on it, and holds it open without reading, until dropped.
    pub(crate) fn hold_open_inside(&self, i: usize, node: usize, request: &str) -> KillOnDrop {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "bash", "-c"])
            // `exec sleep` keeps descriptor 3 (the connection) in the process that
            // is killed on drop.
            .arg(r#"exec 3<>"/dev/tcp/$0/8080" && printf '%s' "$1" >&3 && exec sleep 600"#)
            .args([&self.addr(node), request])
            .stdin(Stdio::null())
            .spawn()
            .expect("bash client in namespace");
        KillOnDrop(child)
    }

    /// Subscribes from inside namespace `i`.
    pub(crate) fn subscribe_inside(&self, i: usize, channel: &str) -> (KillOnDrop, Events) {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "curl", "-sN"])
            .arg(self.url(i, &format!("/channel/{channel}")))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl subscriber");
        let stdout = child.stdout.take().unwrap();
        let (mut forward, rx) = Forward::new();
        tokio::spawn(async move {
            let mut stdout = stdout;
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut buf).await {
                forward.feed(&buf[..n]);
            }
        });
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move { child.wait().await });
        (KillOnDrop::pid(pid), rx)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=self.count {
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

pub(crate) enum KillOnDrop {
    Child(std::process::Child),
    Pid(u32),
}

#[allow(non_snake_case)]
pub(crate) fn KillOnDrop(child: std::process::Child) -> KillOnDrop {
    KillOnDrop::Child(child)
}

impl KillOnDrop {
    pub(crate) fn pid(pid: u32) -> KillOnDrop {
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
                if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        }
    }
}

/// The namespaces, or `None` (after saying why) where the kernel or user cannot
/// make them; with `SSE_REQUIRE_NETNS=1` (CI) that is a failure instead.
pub(crate) fn hosts_or_skip(count: usize) -> Option<Hosts> {
    match Hosts::create(count) {
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
