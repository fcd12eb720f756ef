//! Clients: an EventSource-like subscriber, a publisher, and the end-of-run probe.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt;
use sse_cluster::event::Cursor;
use sse_cluster_client::Parser;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::http;
use crate::trace::{Trace, What};

/// The HTTP port every simulated node listens on.
pub const HTTP_PORT: u16 = 8080;
/// The channel every workload uses.
pub const CHANNEL: &str = "sim";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A stream with no bytes for this long is dead (keep-alives come every second).
const READ_TIMEOUT: Duration = Duration::from_secs(4);
/// Fixed reconnect delay, like a browser honouring a short `retry:`.
const RECONNECT_DELAY: Duration = Duration::from_millis(300);

/// A subscriber that behaves like a browser's `EventSource`.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    pub name: String,
    /// Nodes in the order it tries them; a reconnect moves to the next.
    pub nodes: Vec<usize>,
    pub start: Duration,
    /// When it closes for good.
    pub stop: Duration,
    /// Pause after each chunk read: a slow client.
    pub read_delay: Duration,
}

/// A publisher of `{"p":P,"n":k}` for k in 1..=count, one every `interval`.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    pub name: String,
    pub p: u32,
    /// Nodes it posts to, in turn.
    pub nodes: Vec<usize>,
    pub start: Duration,
    pub count: u32,
    pub interval: Duration,
}

fn at(offset: Duration, start: Instant) -> Instant {
    start + offset
}

pub(crate) async fn subscriber(
    spec: SubscriberSpec,
    ips: Vec<IpAddr>,
    trace: Trace,
) -> turmoil::Result {
    let origin_of_time = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    sleep_until(at(spec.start, origin_of_time)).await;
    let deadline = at(spec.stop, origin_of_time);
    let mut last_event_id: Option<String> = None;
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        let node = spec.nodes[attempt % spec.nodes.len()];
        attempt += 1;
        trace.record(
            &spec.name,
            What::Connecting {
                node,
                last_event_id: last_event_id.clone(),
            },
        );
        let addr = SocketAddr::new(ips[node], HTTP_PORT);
        let once = stream_once(&spec, node, addr, &mut last_event_id, &trace);
        let reason = tokio::select! {
            reason = once => reason,
            _ = sleep_until(deadline) => break,
        };
        trace.record(&spec.name, What::Disconnected { reason });
        sleep(RECONNECT_DELAY).await;
    }
    trace.record(&spec.name, What::Left);
    Ok(())
}

/// One connection: returns why it ended.
async fn stream_once(
    spec: &SubscriberSpec,
    node: usize,
    addr: SocketAddr,
    last_event_id: &mut Option<String>,
    trace: &Trace,
) -> String {
    let path = format!("/channel/{CHANNEL}");
    let mut headers = vec![("accept", "text/event-stream")];
    let resume = last_event_id.clone();
    if let Some(id) = &resume {
        headers.push(("last-event-id", id.as_str()));
    }
    let response = match http::send(addr, "GET", &path, &headers, None, REQUEST_TIMEOUT).await {
        Ok(response) => response,
        Err(e) => return format!("connect: {e}"),
    };
    if response.status() != 200 {
        return format!("status {}", response.status());
    }
    trace.record(&spec.name, What::Opened { node });
    let mut body = response.into_body();
    let mut parser = Parser::with_last_event_id(resume.as_deref().unwrap_or(""));
    loop {
        let frame = match timeout(READ_TIMEOUT, body.frame()).await {
            Err(_) => return "read timed out".into(),
            Ok(None) => return "stream ended".into(),
            Ok(Some(Err(e))) => return format!("read: {e}"),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        parser.feed(&data, |event| {
            trace.record(
                &spec.name,
                What::Event {
                    id: Some(event.id().to_owned()).filter(|id| !id.is_empty()),
                    event: (!event.is_message()).then(|| event.event().to_owned()),
                    data: event.data().to_owned(),
                },
            );
        });
        if !parser.last_event_id().is_empty() {
            *last_event_id = Some(parser.last_event_id().to_owned());
        }
        if !spec.read_delay.is_zero() {
            sleep(spec.read_delay).await;
        }
    }
}

pub(crate) async fn publisher(
    spec: PublisherSpec,
    ips: Vec<IpAddr>,
    origins: crate::cluster::Origins,
    trace: Trace,
) -> turmoil::Result {
    let origin_of_time = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    for n in 1..=spec.count {
        let due = at(spec.start + spec.interval * (n - 1), origin_of_time);
        sleep_until(due).await;
        let node = spec.nodes[(n as usize - 1) % spec.nodes.len()];
        let addr = SocketAddr::new(ips[node], HTTP_PORT);
        let body = format!(r#"{{"data":{{"p":{},"n":{n}}}}}"#, spec.p);
        let path = format!("/channel/{CHANNEL}");
        let what = match http::call(addr, "POST", &path, Some(body), REQUEST_TIMEOUT).await {
            Ok((200, text)) => match accepted_at(&text, origins.current(node)) {
                Some((origin, seq)) => What::Published {
                    p: spec.p,
                    n,
                    node,
                    origin,
                    seq,
                },
                None => What::PublishFailed {
                    p: spec.p,
                    n,
                    node,
                    reason: format!("unreadable answer {text}"),
                },
            },
            Ok((status, text)) => What::PublishFailed {
                p: spec.p,
                n,
                node,
                reason: format!("status {status}: {text}"),
            },
            Err(e) => What::PublishFailed {
                p: spec.p,
                n,
                node,
                reason: e.to_string(),
            },
        };
        trace.record(&spec.name, what);
    }
    Ok(())
}

/// The event's `(origin, seq)` from a publish answer: the returned cursor holds the
/// accepting node's origin at the new event's sequence.
fn accepted_at(answer: &str, origin: u64) -> Option<(u64, u64)> {
    let value: serde_json::Value = serde_json::from_str(answer).ok()?;
    let cursor = Cursor::parse(value["id"].as_str()?).ok()?;
    let seq = cursor.frontier.get(origin);
    (seq > 0).then_some((origin, seq))
}

/// At `at`, asks every node in `nodes` for its channels, history and membership.
pub(crate) async fn probe(
    at: Duration,
    nodes: Vec<usize>,
    ips: Vec<IpAddr>,
    trace: Trace,
) -> turmoil::Result {
    let origin_of_time = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    sleep_until(origin_of_time + at).await;
    for node in nodes {
        let addr = SocketAddr::new(ips[node], HTTP_PORT);
        let status = http::call(addr, "GET", "/status", None, REQUEST_TIMEOUT).await;
        let metrics = http::call(addr, "GET", "/metrics", None, REQUEST_TIMEOUT).await;
        let what = match (status, metrics) {
            (Ok((200, status)), Ok((200, metrics))) => {
                let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
                let channels = status["channels"].as_object().map_or(0, |c| c.len());
                let members_alive = status["gossip"]["members"]
                    .as_array()
                    .map(|members| {
                        members
                            .iter()
                            .filter(|m| m["alive"] == true)
                            .filter_map(|m| m["id"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                What::Probe {
                    node,
                    channels,
                    dormant_channels: gauge(&metrics, "sse_dormant_channels"),
                    history_events: gauge(&metrics, "sse_history_events"),
                    members_alive,
                }
            }
            (status, metrics) => What::ProbeFailed {
                node,
                reason: format!(
                    "status {:?}, metrics {:?}",
                    status.map(|s| s.0),
                    metrics.map(|m| m.0)
                ),
            },
        };
        trace.record("probe", what);
    }
    Ok(())
}

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(u64::MAX)
}
