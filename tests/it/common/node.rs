//! Helpers: real `sse-cluster` processes on loopback, an SSE reader, publishing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) use super::net::free_ports;

/// Node logs stay quiet (warnings, discarded) unless `NODE_LOG` sets a filter, in
/// which case they go to the test's stderr.
pub(crate) fn quiet_unless_node_log(command: &mut Command) -> &mut Command {
    let filter = std::env::var("NODE_LOG").ok();
    command
        .env("RUST_LOG", filter.as_deref().unwrap_or("warn"))
        .stdout(Stdio::null())
        .stderr(if filter.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
}

/// One node process; killed when dropped.
pub(crate) struct NodeProcess {
    pub(crate) http: u16,
    pub(crate) gossip: u16,
    child: Option<Child>,
    args: Vec<String>,
    /// Where its log goes (info level), when the test reads it.
    log: Option<PathBuf>,
}

impl NodeProcess {
    /// Starts a node; `seed` is another node's gossip port.
    pub(crate) fn start(seed: Option<u16>, extra: &[&str]) -> NodeProcess {
        let (http, gossip) = free_ports();
        Self::start_on(http, gossip, seed, extra)
    }

    pub(crate) fn start_on(
        http: u16,
        gossip: u16,
        seed: Option<u16>,
        extra: &[&str],
    ) -> NodeProcess {
        let mut args = vec![
            "start".to_owned(),
            format!("--http.server.port={http}"),
            "--http.server.address=127.0.0.1".to_owned(),
            format!("--gossip.port={gossip}"),
            "--http.client.timeout=3s".to_owned(),
        ];
        if let Some(seed) = seed {
            args.push(format!("--gossip.hosts=127.0.0.1:{seed}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProcess {
            http,
            gossip,
            child: None,
            args,
            log: None,
        };
        node.spawn();
        node
    }

    /// Like [`NodeProcess::start_on`] (no seed), with the node's log (info level)
    /// appended to `log`.
    pub(crate) fn start_logged(
        http: u16,
        gossip: u16,
        extra: &[&str],
        log: PathBuf,
    ) -> NodeProcess {
        let mut args = vec![
            "start".to_owned(),
            format!("--http.server.port={http}"),
            "--http.server.address=127.0.0.1".to_owned(),
            format!("--gossip.port={gossip}"),
            "--http.client.timeout=3s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProcess {
            http,
            gossip,
            child: None,
            args,
            log: Some(log),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sse-cluster"));
        command.args(&self.args);
        match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the node's log file");
                command
                    .env("RUST_LOG", "info")
                    .env("LOG_FORMAT", "text")
                    .stdout(Stdio::null())
                    .stderr(file);
            }
            None => {
                quiet_unless_node_log(&mut command);
            }
        }
        self.child = Some(command.spawn().expect("start sse-cluster"));
    }

    /// Sends `signal` to the running process (through rustix, not an external `kill`).
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a positive pid");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("signal {signal:?} to {}: {e}", child.id()));
    }

    /// Waits (polling, without blocking the runtime) until the process exits.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node on port {} did not exit within {within:?}",
                self.http
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the same node again after it exited (same ports and flags).
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// `kill -9`: no goodbye, no flush.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same node again (same ports and flags, a new generation).
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Waits until `node` sees `members` live members and is ready.
pub(crate) async fn wait_for_members(node: &NodeProcess, members: usize) {
    wait_for_members_at(&node.url(""), members).await;
}

/// Waits until the node at `base` (`http://host:port`) sees `members` live members
/// and answers `/readyz`.
pub(crate) async fn wait_for_members_at(base: &str, members: usize) {
    wait_for_members_within(base, members, Duration::from_secs(30)).await
}

/// Waits until the node at `base` is ready and sees `members` live members.
pub(crate) async fn wait_for_members_within(base: &str, members: usize, within: Duration) {
    let client = client();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(response) = client.get(format!("{base}/status")).send().await {
            if let Ok(status) = response.json::<Value>().await {
                let live = status["gossip"]["members"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["alive"] == true).count())
                    .unwrap_or(0);
                let ready = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if live == members && ready {
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {base} did not see {members} live members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn publish(node: &NodeProcess, channel: &str, body: Value) -> Value {
    let response = client()
        .post(node.url(&format!("/channel/{channel}")))
        .json(&body)
        .send()
        .await
        .expect("publish");
    assert!(
        response.status().is_success(),
        "publish: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub(crate) event: Option<String>,
    pub(crate) data: String,
    /// The last event id in effect after this event.
    pub(crate) id: Option<String>,
}

/// Parses SSE lines into events.
#[derive(Default)]
pub(crate) struct SseParser {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feeds one line (without its newline); returns an event when one completes.
    pub(crate) fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            return self.data.take().map(|data| SseEvent {
                event,
                data,
                id: self.id.clone(),
            });
        }
        if let Some(v) = line.strip_prefix("data: ") {
            self.data = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            self.event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            self.id = Some(v.to_owned());
        }
        None
    }
}

/// Subscribes and forwards every event (with data) to the returned receiver; `None`
/// when the stream ends.
pub(crate) async fn subscribe(
    url: String,
    last_event_id: Option<String>,
) -> mpsc::UnboundedReceiver<Option<SseEvent>> {
    try_subscribe(url, last_event_id).await.expect("subscribe")
}

/// Like [`subscribe`], but a refused or failed subscribe is an error, not a panic.
pub(crate) async fn try_subscribe(
    url: String,
    last_event_id: Option<String>,
) -> Result<mpsc::UnboundedReceiver<Option<SseEvent>>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut buf = String::new();
        let mut parser = SseParser::default();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = buf.find('\n') {
                let line: String = buf.drain(..=pos).collect();
                if let Some(event) = parser.line(line.trim_end_matches('\n')) {
                    let _ = tx.send(Some(event));
                }
            }
        }
        let _ = tx.send(None);
    });
    Ok(rx)
}

/// Collects events until `count` data events with no `event:` name arrived, the
/// stream ends, or the timeout passes. Named events are returned separately.
pub(crate) async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Option<SseEvent>>,
    count: usize,
    timeout: Duration,
) -> (Vec<SseEvent>, Vec<SseEvent>, bool) {
    let mut plain = Vec::new();
    let mut named = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while plain.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Some(event))) if event.event.is_none() => plain.push(event),
            Ok(Some(Some(event))) => named.push(event),
            Ok(Some(None)) | Ok(None) => return (plain, named, true),
            Err(_) => break,
        }
    }
    (plain, named, false)
}

/// Checks a subscriber's events: each (origin, n) once, and per-origin order.
pub(crate) fn check_exactly_once(events: &[SseEvent], expected_per_origin: &HashMap<u64, u64>) {
    let mut last: HashMap<u64, u64> = HashMap::new();
    for event in events {
        let value: Value = serde_json::from_str(&event.data).unwrap();
        let origin = value["origin"].as_u64().unwrap();
        let n = value["n"].as_u64().unwrap();
        let previous = last.insert(origin, n);
        assert!(
            previous.is_none_or(|p| n == p + 1),
            "origin {origin}: event {n} after {previous:?} (duplicate, gap or reorder)"
        );
    }
    for (origin, count) in expected_per_origin {
        assert_eq!(
            last.get(origin).copied(),
            Some(*count),
            "origin {origin}: last event"
        );
    }
    let total: u64 = expected_per_origin.values().sum();
    assert_eq!(events.len() as u64, total, "total events");
}
