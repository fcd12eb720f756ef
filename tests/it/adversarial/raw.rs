//! Helpers: a node whose log is kept, raw HTTP/1.1 over TCP, and a streaming
//! subscriber that sees the exact body bytes.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub(crate) use crate::common::net::free_ports;
pub(crate) use crate::common::node::NodeProcess;

/// How long any single wait may take before it counts as a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A node on loopback whose warnings are kept (a panic shows in [`NodeProcess::log`]),
/// with `extra` flags; returns once it answers.
pub(crate) async fn start_node(extra: &[&str]) -> NodeProcess {
    let (http, gossip) = free_ports();
    start_node_on(http, gossip, extra).await
}

pub(crate) async fn start_node_on(http: u16, gossip: u16, extra: &[&str]) -> NodeProcess {
    let node = NodeProcess::builder()
        .ports(http, gossip)
        .args(&[
            "--http.client.timeout=2s",
            // No keep-alive comments in the middle of byte-exact comparisons.
            "--http.server.keepAlive=1h",
        ])
        .args(extra)
        .keep_log()
        .spawn();
    node.wait_healthy().await;
    node
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
    pub(crate) async fn open(node: &NodeProcess, path: &str) -> Subscriber {
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
