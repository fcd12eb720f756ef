//! Reading a stream's events with the client crate's WHATWG parser
//! (`sse_cluster_client::Parser`), for tests that care about events rather than the
//! exact bytes (those read with `server::RawStream` or raw sockets).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
pub(crate) use sse_cluster_client::Event;
use sse_cluster_client::Parser;
use tokio::sync::mpsc;

/// A subscription's events as they are read; `None` when the stream ended.
pub(crate) type Events = mpsc::UnboundedReceiver<Option<Event>>;

/// Parses stream bytes and forwards each event to an [`Events`] receiver; the
/// receiver gets `None` when this is dropped (the stream ended).
pub(crate) struct Forward {
    parser: Parser,
    events: mpsc::UnboundedSender<Option<Event>>,
}

impl Forward {
    pub(crate) fn new() -> (Forward, Events) {
        let (events, rx) = mpsc::unbounded_channel();
        let forward = Forward {
            parser: Parser::new(),
            events,
        };
        (forward, rx)
    }

    /// Feeds stream bytes, cut anywhere.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let events = &self.events;
        self.parser.feed(bytes, |event| {
            let _ = events.send(Some(event.to_event()));
        });
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.events.send(None);
    }
}

/// Subscribes to `url` and forwards every event to the returned receiver.
pub(crate) async fn subscribe(url: String, last_event_id: Option<String>) -> Events {
    try_subscribe(url, last_event_id).await.expect("subscribe")
}

/// Like [`subscribe`], but a refused or failed subscribe is an error, not a panic.
pub(crate) async fn try_subscribe(
    url: String,
    last_event_id: Option<String>,
) -> Result<Events, String> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let (mut forward, rx) = Forward::new();
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            forward.feed(&chunk);
        }
    });
    Ok(rx)
}

/// Collects events until `count` events without a name (`message`) arrived, the
/// stream ends, or the timeout passes. Named events are returned separately.
pub(crate) async fn collect(
    rx: &mut Events,
    count: usize,
    timeout: Duration,
) -> (Vec<Event>, Vec<Event>, bool) {
    let mut plain = Vec::new();
    let mut named = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while plain.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Some(event))) if event.event == "message" => plain.push(event),
            Ok(Some(Some(event))) => named.push(event),
            Ok(Some(None)) | Ok(None) => return (plain, named, true),
            Err(_) => break,
        }
    }
    (plain, named, false)
}

/// Checks a subscriber's events: each (origin, n) once, and per-origin order.
pub(crate) fn check_exactly_once(events: &[Event], expected_per_origin: &HashMap<u64, u64>) {
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
