//! A node in this process on a real loopback socket (chosen config, origin and clock),
//! a raw HTTP/1.1 SSE client that sees the exact bytes (its blocks read with the
//! client crate's parser), and the redaction of streams for snapshots.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use bytes::BytesMut;
use sse_cluster::clock::Clock;
use sse_cluster::config::Config;
use sse_cluster::metrics::Metrics;
use sse_cluster::node::{Node, Standalone};
use sse_cluster::transport::tcp;
use sse_cluster_client::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::{metrics, net};

/// How long any single wait in these tests may take before it counts as a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Heavy tests (thousands of connections or events) take this lock so they do not
/// compete for the machine's cores with each other.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config for tests: loopback, and everything else as shipped.
pub(crate) fn config() -> Config {
    let mut config = Config::default();
    config.http.bind = [127, 0, 0, 1].into();
    config.http.port = 0;
    config
}

/// A node serving HTTP on a loopback port, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub(crate) async fn start(config: Config) -> Server {
        Self::start_with(config, 0x5eed_0001, Clock::system()).await
    }

    /// A node with a chosen origin and clock, so cursors are predictable.
    pub(crate) async fn start_with(config: Config, origin: u64, clock: Clock) -> Server {
        config.validate().expect("test config is valid");
        let options = tcp::HttpSocketOptions {
            unacknowledged_timeout: config.http.write_stall_timeout,
            keep_alive: config.http.keep_alive,
        };
        let listener = tcp::bind_http(SocketAddr::from(([127, 0, 0, 1], 0)), options)
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let cluster = Arc::new(Standalone {
            id: "test-node".into(),
            http_addr: addr.to_string(),
        });
        let node = Node::new(config, origin, clock);
        let metrics = node.broker().metrics().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(listener, cluster, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            metrics,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Publishes `body` (a JSON text) to `path` and returns the status and JSON answer.
    pub(crate) async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("publish request");
        let status = response.status().as_u16();
        let json = response.json().await.expect("publish answer is JSON");
        (status, json)
    }

    /// Publishes and insists on success.
    pub(crate) async fn publish(&self, path: &str, body: &str) -> serde_json::Value {
        let (status, json) = self.post(path, body).await;
        assert_eq!(status, 200, "publish to {path} failed: {json}");
        json
    }

    /// GETs `path` and checks the answer: `status`, and an `error` that says `says`.
    pub(crate) async fn assert_refused(&self, path: &str, status: u16, says: &str) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), status, "{path}");
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains(says), "{path}: {error}");
    }

    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        net::get_json(&self.http, &self.url(path)).await
    }

    /// One gauge or counter from `/metrics`, scraped over HTTP.
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        metrics::scrape(&self.http, &self.url("/metrics"), name).await
    }

    /// Waits until `check` holds for the value of `name`, or fails with the last value.
    pub(crate) async fn wait_metric(&self, name: &str, check: impl Fn(u64) -> bool) -> u64 {
        metrics::wait_metric(&self.http, &self.url("/metrics"), name, WAIT, check).await
    }

    /// Waits until `/status` lists no channel (the last streams are gone).
    pub(crate) async fn wait_no_channels(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.get_json("/status").await;
            if status["channels"].as_object().is_some_and(|c| c.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the node and waits for `run` to return.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(WAIT, task)
                .await
                .expect("node stops in time")
                .expect("node task")
                .expect("node run");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An SSE subscription over a plain TCP socket speaking HTTP/1.1 by hand: the test
/// sees exactly the bytes the server wrote (after chunked decoding), and can choose
/// not to read at all.
pub(crate) struct RawStream {
    socket: TcpStream,
    pub(crate) status: u16,
    /// Response headers, names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// Read from the socket but not yet decoded.
    wire: BytesMut,
    /// Decoded body bytes not yet consumed.
    body: BytesMut,
    /// Bytes left in the current chunk; `None` between chunks.
    chunk_left: Option<usize>,
    chunked: bool,
    /// The server ended the body (last chunk or closed socket).
    pub(crate) ended: bool,
}

impl RawStream {
    /// Sends `GET path` with `headers`, and reads the response head.
    pub(crate) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawStream {
        let socket = TcpStream::connect(addr).await.expect("connect");
        Self::send_get(socket, path, headers).await
    }

    /// The client's port of the connection.
    pub(crate) fn local_port(&self) -> u16 {
        self.socket.local_addr().expect("local address").port()
    }

    /// Like `get`, over a socket with a small receive buffer, for readers that stall.
    pub(crate) async fn get_small_buffer(addr: SocketAddr, path: &str) -> RawStream {
        let socket = small_buffer_socket(addr).await;
        Self::send_get(socket, path, &[]).await
    }

    async fn send_get(mut socket: TcpStream, path: &str, headers: &[(&str, &str)]) -> RawStream {
        socket
            .write_all(request_head("GET", path, headers).as_bytes())
            .await
            .expect("send request");
        let mut stream = RawStream {
            socket,
            status: 0,
            headers: Vec::new(),
            wire: BytesMut::new(),
            body: BytesMut::new(),
            chunk_left: None,
            chunked: false,
            ended: false,
        };
        stream.read_head().await;
        stream
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    async fn read_head(&mut self) {
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(end) = find(&self.wire, b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill(deadline).await > 0, "connection closed in head");
        };
        let head = String::from_utf8(self.wire[..end].to_vec()).expect("ASCII head");
        let _ = self.wire.split_to(end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        self.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                self.headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        self.chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        self.decode();
    }

    /// Reads more wire bytes; 0 means the peer closed. Fails past `deadline`.
    async fn fill(&mut self, deadline: Instant) -> usize {
        let mut buf = [0u8; 16 * 1024];
        let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buf))
            .await
            .expect("timed out waiting for the server");
        // A reset counts as the server closing the connection.
        let n = read.unwrap_or(0);
        self.wire.extend_from_slice(&buf[..n]);
        n
    }

    /// Moves complete chunk data from `wire` to `body`.
    fn decode(&mut self) {
        if !self.chunked {
            let decoded = self.wire.split();
            self.body.extend_from_slice(&decoded);
            return;
        }
        loop {
            match self.chunk_left {
                Some(0) => {
                    if self.wire.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.wire[..2], b"\r\n", "chunk not followed by CRLF");
                    let _ = self.wire.split_to(2);
                    self.chunk_left = None;
                }
                Some(left) => {
                    if self.wire.is_empty() {
                        return;
                    }
                    let take = left.min(self.wire.len());
                    let part = self.wire.split_to(take);
                    self.body.extend_from_slice(&part);
                    self.chunk_left = Some(left - take);
                }
                None => {
                    let Some(line_end) = find(&self.wire, b"\r\n") else {
                        return;
                    };
                    let size_text = String::from_utf8_lossy(&self.wire[..line_end]).to_string();
                    let size = usize::from_str_radix(size_text.trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
                    let _ = self.wire.split_to(line_end + 2);
                    if size == 0 {
                        self.ended = true;
                        return;
                    }
                    self.chunk_left = Some(size);
                }
            }
        }
    }

    /// Reads until the decoded body holds a complete SSE block (ending in a blank line)
    /// and returns it, blank line included. `None` if the stream ended first.
    pub(crate) async fn next_block(&mut self) -> Option<String> {
        self.next_block_within(WAIT).await
    }

    pub(crate) async fn next_block_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = find(&self.body, b"\n\n") {
                let block = self.body.split_to(end + 2);
                return Some(String::from_utf8(block.to_vec()).expect("UTF-8 stream"));
            }
            if self.ended {
                return None;
            }
            if self.fill(deadline).await == 0 {
                self.ended = true;
            }
            self.decode();
        }
    }

    /// The next block that is an event (has a `data:` line), skipping comments and
    /// id-only blocks.
    pub(crate) async fn next_event(&mut self) -> Option<Frame> {
        loop {
            let frame = Frame::parse(&self.next_block().await?);
            if frame.data.is_some() {
                return Some(frame);
            }
        }
    }

    /// Reads until the stream ends; returns everything decoded on the way.
    pub(crate) async fn read_to_end(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while !self.ended {
            if self.fill(deadline).await == 0 {
                self.ended = true;
            }
            self.decode();
        }
        String::from_utf8(self.body.split().to_vec()).expect("UTF-8 stream")
    }

    /// Waits until the peer closes the socket (or the body ends), discarding data.
    pub(crate) async fn wait_closed(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut total = 0;
        loop {
            let n = self.fill(deadline).await;
            total += n;
            self.wire.clear();
            if n == 0 {
                return total;
            }
        }
    }
}

async fn small_buffer_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

pub(crate) fn request_head(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One SSE block, split into its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) retry: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) comments: Vec<String>,
}

impl Frame {
    /// Reads one block (as [`RawStream::next_block`] returns it) with the client
    /// crate's EventSource parser, and checks that it is as the broker writes blocks:
    /// whole, each line a comment or a field the parser took, each field once (so
    /// data on one line), no `event: message`.
    pub(crate) fn parse(block: &str) -> Frame {
        let mut parser = Parser::new();
        let mut events = parser.feed_to_vec(block.as_bytes()).into_iter();
        let event = events.next();
        assert!(
            events.next().is_none() && parser.buffered() == 0,
            "one whole block: {block:?}"
        );
        let frame = Frame {
            id: Some(parser.last_event_id().to_owned()).filter(|id| !id.is_empty()),
            event: event
                .as_ref()
                .map(|e| e.event.clone())
                .filter(|name| name != "message"),
            retry: parser.retry().map(|ms| ms.to_string()),
            data: event.map(|e| e.data),
            comments: block
                .lines()
                .filter_map(|line| line.strip_prefix(':'))
                .map(|comment| comment.trim().to_owned())
                .collect(),
        };
        let fields = [
            frame.id.is_some(),
            frame.event.is_some(),
            frame.retry.is_some(),
            frame.data.is_some(),
        ];
        let fields = fields.iter().filter(|&&set| set).count();
        let lines = block.lines().filter(|line| !line.is_empty()).count();
        assert_eq!(
            lines,
            fields + frame.comments.len(),
            "a field the broker does not write, or one written twice: {block:?}"
        );
        frame
    }

    /// `data` parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.as_deref().expect("event has data")).expect("data is JSON")
    }
}

/// Opens a stream, checks its opening (`retry:` then an `id:` block) and returns the
/// stream and the opening cursor.
pub(crate) async fn open_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> RawStream {
    let mut stream = RawStream::get(addr, path, headers).await;
    assert_eq!(stream.status, 200, "subscribe {path}: {:?}", stream.headers);
    let first = stream.next_block().await.expect("retry block");
    assert!(
        first.starts_with("retry: "),
        "stream opens with retry: {first:?}"
    );
    stream
}

/// Reads events until one with `data` equal to `sentinel`, returning those before it.
pub(crate) async fn events_until(stream: &mut RawStream, sentinel: &str) -> Vec<Frame> {
    let mut seen = Vec::new();
    loop {
        let frame = stream
            .next_event()
            .await
            .unwrap_or_else(|| panic!("stream ended before {sentinel}; got {seen:?}"));
        if frame.data.as_deref() == Some(sentinel) {
            return seen;
        }
        seen.push(frame);
    }
}

/// The data of each frame.
pub(crate) fn datas(frames: &[Frame]) -> Vec<String> {
    frames.iter().filter_map(|f| f.data.clone()).collect()
}

/// Makes stream bytes deterministic for snapshots: the wall-clock part of each
/// cursor becomes `[time]` and an overflow's lag becomes `[n]`. Everything else,
/// the origin in cursors included (tests fix it), stays byte for byte.
pub(crate) fn redact(stream: &str) -> String {
    let mut out = String::with_capacity(stream.len());
    for line in stream.split_inclusive('\n') {
        match line.strip_prefix("id: ") {
            Some(rest) => {
                let digits =
                    rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                assert!(digits > 0, "cursor starts with its time: {line:?}");
                out.push_str("id: [time]");
                out.push_str(&rest[digits..]);
            }
            None => out.push_str(line),
        }
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("\"behind\":") {
        let after = &rest[at + 9..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        result.push_str(&rest[..at + 9]);
        result.push_str("[n]");
        rest = &after[digits..];
    }
    result.push_str(rest);
    result
}

/// Stream bytes as a snapshot shows them: redacted, each line's `\n` written out so
/// blank lines (the event terminators) are visible, and invisible characters named.
pub(crate) fn wire(stream: &str) -> String {
    let mut out = String::new();
    for c in redact(stream).chars() {
        match c {
            '\n' => out.push_str("\\n\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The README from `heading` (a heading's text, `#`s included) to its end: the
/// section and what follows it, for tests that hold the README to the code.
pub(crate) fn readme_from(heading: &str) -> &'static str {
    let readme = include_str!("../../../README.md");
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has a section {heading:?}"));
    &readme[at + heading.len()..]
}
