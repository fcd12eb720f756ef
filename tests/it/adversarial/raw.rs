//! Helpers: a node process on loopback whose stderr is kept, raw HTTP/1.1 over TCP,
//! a streaming subscriber that sees the exact body bytes, and `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub(crate) use crate::common::net::free_ports;
use crate::common::{metrics, net};

/// How long any single wait may take before it counts as a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A node process; killed when dropped.
pub(crate) struct Node {
    pub(crate) http: u16,
    pub(crate) gossip: u16,
    child: Child,
    stderr: PathBuf,
    pub(crate) client: reqwest::Client,
}

impl Node {
    /// Starts a node on loopback with `extra` flags and waits until it answers.
    pub(crate) async fn start(extra: &[&str]) -> Node {
        let (http, gossip) = free_ports();
        Self::start_on(http, gossip, extra).await
    }

    pub(crate) async fn start_on(http: u16, gossip: u16, extra: &[&str]) -> Node {
        let stderr =
            std::env::temp_dir().join(format!("sse-adversarial-{}-{http}.log", std::process::id()));
        let log = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_sse-cluster"))
            .arg("start")
            .arg(format!("--http.server.port={http}"))
            .arg("--http.server.address=127.0.0.1")
            .arg(format!("--gossip.port={gossip}"))
            .arg("--http.client.timeout=2s")
            // No keep-alive comments in the middle of byte-exact comparisons.
            .arg("--http.server.keepAlive=1h")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sse-cluster");
        let node = Node {
            http,
            gossip,
            child,
            stderr,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = node.client.get(node.url("/healthz")).send().await {
                if response.status() == 200 {
                    return node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node did not start: {}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// What the node wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The node is still running, never panicked, and answers a fresh client.
    pub(crate) async fn assert_healthy(&mut self) {
        assert!(
            self.child.try_wait().expect("child status").is_none(),
            "node exited: {}",
            self.log()
        );
        let log = self.log();
        assert!(!log.contains("panicked"), "node panicked: {log}");
        let response = timeout(WAIT, reqwest::get(self.url("/healthz")))
            .await
            .expect("healthz in time")
            .expect("healthz");
        assert_eq!(response.status(), 200);
    }

    pub(crate) async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("answer body"))
    }

    pub(crate) async fn json(&self, path: &str) -> serde_json::Value {
        net::get_json(&self.client, &self.url(path)).await
    }

    /// The node process's peak resident memory (`VmHWM`), in KiB.
    #[cfg(target_os = "linux")]
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the node's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    pub(crate) async fn metric(&self, name: &str) -> u64 {
        metrics::scrape(&self.client, &self.url("/metrics"), name).await
    }

    /// Waits until `check` holds for metric `name`; returns its value.
    pub(crate) async fn wait_metric(&self, name: &str, check: impl Fn(u64) -> bool) -> u64 {
        metrics::wait_metric(&self.client, &self.url("/metrics"), name, WAIT, check).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// What came back for a raw request: the status (`None`: closed without one).
#[derive(Debug)]
pub(crate) struct RawAnswer {
    pub(crate) status: Option<u16>,
    pub(crate) text: String,
}

/// Writes `request` on a fresh connection and reads until the server closes it.
pub(crate) async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading it all: a failed write is fine.
    let _ = socket.write_all(request).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match timeout(WAIT, socket.read(&mut buf)).await {
            Err(_) => panic!("server neither answered nor closed"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer { status, text }
}

/// A subscriber reading the exact body bytes of its stream.
pub(crate) struct Subscriber {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    pub(crate) received: Vec<u8>,
}

impl Subscriber {
    pub(crate) async fn open(node: &Node, path: &str) -> Subscriber {
        let response = node
            .client
            .get(node.url(path))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(response.status(), 200, "subscribe {path}");
        let mut subscriber = Subscriber {
            body: Box::pin(response.bytes_stream()),
            received: Vec::new(),
        };
        // The opening: `retry:` and the channel's cursor.
        subscriber.read_until(b"\n\nid: ").await;
        subscriber.read_until(b"\n\n").await;
        subscriber
    }

    /// Reads until the received bytes end with `suffix` somewhere after what was read.
    pub(crate) async fn read_until(&mut self, needle: &[u8]) {
        let deadline = Instant::now() + WAIT;
        let start = self.received.len().saturating_sub(needle.len());
        while !self.received[start..]
            .windows(needle.len())
            .any(|w| w == needle)
        {
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {:?} in {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&self.received)
                    )
                })
                .expect("stream open")
                .expect("stream read");
            self.received.extend_from_slice(&chunk);
        }
    }
}

/// `stream` with every cursor (`id:` value) checked and replaced by `C`.
pub(crate) fn redact_cursors(stream: &[u8]) -> String {
    let text = std::str::from_utf8(stream).expect("UTF-8 stream");
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("id: ") {
            Some(cursor) => {
                let cursor = cursor.strip_suffix('\n').expect("whole line");
                assert!(
                    sse_cluster::event::Cursor::parse(cursor).is_ok(),
                    "id is a cursor: {cursor:?}"
                );
                out.push_str("id: C\n");
            }
            None => out.push_str(line),
        }
    }
    out
}
