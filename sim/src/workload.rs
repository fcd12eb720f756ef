//! Clients: an EventSource-like subscriber, a publisher, and the end-of-run probe.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt;
use sse_cluster::event::Cursor;
use sse_cluster_client::Parser;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::http;
use crate::plan::{Origins, PublisherSpec, SubscriberSpec, HTTP_PORT};
use crate::streams::Stream;
use crate::trace::{Trace, What};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A publish unanswered this long is given up (and retried, with an id).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before a publisher retries a failed or unanswered publish elsewhere.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Attempts of one publish, with an id (the first and the retries).
const ATTEMPTS: u32 = 4;
/// A stream with no bytes for this long is dead (keep-alives come every second).
const READ_TIMEOUT: Duration = Duration::from_secs(4);
/// Fixed reconnect delay, like a browser honouring a short `retry:`.
const RECONNECT_DELAY: Duration = Duration::from_millis(300);
/// A subscriber that leaves still reads, at full speed, what its node already sent
/// or queued to its open stream (a slow reader can be seconds behind its socket,
/// with the node's `overflow` among the unread bytes): until the stream has been
/// quiet this long (less than the keep-alive interval) or ends...
const LEAVING_QUIET: Duration = Duration::from_millis(500);
/// ...and for at most this long.
const LEAVING_AT_MOST: Duration = Duration::from_secs(5);

/// The trace actor of one subscriber's stream of one channel.
pub fn actor(subscriber: &str, channel: &str) -> String {
    format!("{subscriber}@{channel}")
}

fn at(offset: Duration, start: Instant) -> Instant {
    start + offset
}

/// Runs `spec` in a plan whose publishers use the channels `published` (what its
/// patterns match).
pub(crate) async fn subscriber(
    spec: SubscriberSpec,
    published: Vec<String>,
    ips: Vec<IpAddr>,
    trace: Trace,
) -> turmoil::Result {
    let mut streams = Vec::new();
    for path in spec.channels.clone() {
        let stream = Stream::new(&path, &published);
        let (spec, ips, trace) = (spec.clone(), ips.clone(), trace.clone());
        streams.push(tokio::task::spawn_local(subscribe_one(
            spec, stream, ips, trace,
        )));
    }
    for stream in streams {
        stream.await??;
    }
    Ok(())
}

async fn subscribe_one(
    spec: SubscriberSpec,
    stream: Stream,
    ips: Vec<IpAddr>,
    trace: Trace,
) -> turmoil::Result {
    // Every channel it carries gets the stream's comings and goings.
    let actors: Vec<String> = stream.channels().map(|c| actor(&spec.name, c)).collect();
    let record = |what: What| {
        for me in &actors {
            trace.record(me, what.clone());
        }
    };
    let origin_of_time = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    sleep_until(at(spec.start, origin_of_time)).await;
    let deadline = at(spec.stop, origin_of_time);
    let mut last_event_id: Option<String> = None;
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        let node = spec.nodes[attempt % spec.nodes.len()];
        attempt += 1;
        record(What::Connecting {
            node,
            last_event_id: last_event_id.clone(),
        });
        let addr = SocketAddr::new(ips[node], HTTP_PORT);
        let mut events = 0;
        let connection = Connection::default();
        let reason = {
            let mut once = std::pin::pin!(stream_once(
                &spec,
                &stream,
                node,
                addr,
                &mut last_event_id,
                &mut events,
                &trace,
                &connection,
            ));
            let hop = async {
                match spec.hop_every {
                    Some(every) => sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                biased;
                _ = sleep_until(deadline) => None,
                reason = &mut once => Some(reason),
                _ = hop => Some("moved to another node".to_owned()),
            };
            if reason.is_none() && connection.open.get() {
                // Leaving: what the node already wrote to this stream is read
                // first, as a page reads what its socket holds before it closes.
                // Otherwise a slow reader's unread `overflow` (and the events
                // queued before it) would look like a silent loss.
                connection.leaving.set(true);
                let _ = timeout(LEAVING_AT_MOST, once).await;
            }
            reason
        };
        if !stream.is_single() {
            trace.record(
                &spec.name,
                What::Wrapped {
                    stream: stream.path.clone(),
                    events,
                },
            );
        }
        let Some(reason) = reason else {
            break;
        };
        record(What::Disconnected { reason });
        sleep(RECONNECT_DELAY).await;
    }
    record(What::Left);
    Ok(())
}

/// The state of one connection that its subscriber looks at.
#[derive(Default)]
struct Connection {
    /// The stream answered 200 (it is open).
    open: Cell<bool>,
    /// The subscriber is leaving: read what is there without pausing, and end
    /// once the stream is quiet (see [`LEAVING_QUIET`]).
    leaving: Cell<bool>,
}

/// One connection: returns why it ended. Counts in `events` the events (not
/// signals) it got.
#[allow(clippy::too_many_arguments)]
async fn stream_once(
    spec: &SubscriberSpec,
    stream: &Stream,
    node: usize,
    addr: SocketAddr,
    last_event_id: &mut Option<String>,
    events: &mut u64,
    trace: &Trace,
    connection: &Connection,
) -> String {
    let path = format!("/channel/{}", stream.path);
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
    for channel in stream.channels() {
        trace.record(&actor(&spec.name, channel), What::Opened { node });
    }
    connection.open.set(true);
    let mut body = response.into_body();
    let mut parser = Parser::with_last_event_id(resume.as_deref().unwrap_or(""));
    loop {
        let leaving = connection.leaving.get();
        let wait = if leaving { LEAVING_QUIET } else { READ_TIMEOUT };
        let frame = match timeout(wait, body.frame()).await {
            Err(_) if leaving => return "left: nothing more was queued".into(),
            Err(_) => return "read timed out".into(),
            Ok(None) => return "stream ended".into(),
            Ok(Some(Err(e))) => return format!("read: {e}"),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        parser.feed(&data, |event| {
            let signal = (!event.is_message()).then(|| event.event().to_owned());
            *events += u64::from(signal.is_none());
            if stream.is_single() {
                let channel = stream.path.as_str();
                trace.record(
                    &actor(&spec.name, channel),
                    What::Event {
                        id: Some(event.id().to_owned()).filter(|id| !id.is_empty()),
                        event: signal,
                        data: event.data().to_owned(),
                    },
                );
                return;
            }
            match stream.unwrap(signal.as_deref(), event.data(), event.id()) {
                Some((channels, data)) => {
                    for (channel, id) in channels {
                        trace.record(
                            &actor(&spec.name, &channel),
                            What::Event {
                                id,
                                event: signal.clone(),
                                data: data.to_owned(),
                            },
                        );
                    }
                }
                // The checker reports it as garbled.
                None => trace.record(
                    &actor(&spec.name, &stream.path),
                    What::Event {
                        id: None,
                        event: None,
                        data: format!("not wrapped for this stream: {}", event.data()),
                    },
                ),
            }
        });
        if !parser.last_event_id().is_empty() {
            *last_event_id = Some(parser.last_event_id().to_owned());
        }
        if !spec.read_delay.is_zero() && !connection.leaving.get() {
            sleep(spec.read_delay).await;
        }
    }
}

pub(crate) async fn publisher(
    spec: PublisherSpec,
    ips: Vec<IpAddr>,
    origins: Origins,
    trace: Trace,
) -> turmoil::Result {
    let origin_of_time = Instant::now() - turmoil::sim_elapsed().unwrap_or_default();
    let attempts = if spec.retry_with_id { ATTEMPTS } else { 1 };
    for n in 1..=spec.count {
        let due = at(spec.start + spec.interval * (n - 1), origin_of_time);
        sleep_until(due).await;
        for attempt in 0..attempts {
            let node = spec.nodes[(n + attempt) as usize % spec.nodes.len()];
            let what = publish_once(&spec, n, attempt, node, &ips, &origins).await;
            let failed = matches!(what, What::PublishFailed { .. });
            trace.record(&spec.name, what);
            if !failed {
                break;
            }
            sleep(RETRY_DELAY).await;
        }
    }
    Ok(())
}

async fn publish_once(
    spec: &PublisherSpec,
    n: u32,
    attempt: u32,
    node: usize,
    ips: &[IpAddr],
    origins: &Origins,
) -> What {
    let sent_ms = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
    let addr = SocketAddr::new(ips[node], HTTP_PORT);
    let p = spec.p;
    let data = format!(r#"{{"p":{p},"n":{n},"a":{attempt}}}"#);
    let body = if spec.retry_with_id {
        format!(r#"{{"id":"p{p}-{n}","data":{data}}}"#)
    } else {
        format!(r#"{{"data":{data}}}"#)
    };
    let path = format!("/channel/{}", spec.channel);
    let failed = |reason: String| What::PublishFailed {
        p,
        n,
        attempt,
        node,
        sent_ms,
        reason,
    };
    match http::call(addr, "POST", &path, Some(body), PUBLISH_TIMEOUT).await {
        Ok((200, text)) => match accepted_at(&text, origins.current(node)) {
            Some((origin, seq, duplicate)) => What::Published {
                p,
                n,
                attempt,
                channel: spec.channel.clone(),
                node,
                sent_ms,
                origin,
                seq,
                duplicate,
            },
            None => failed(format!("unreadable answer {text}")),
        },
        Ok((status, text)) => failed(format!("status {status}: {text}")),
        Err(e) => failed(e.to_string()),
    }
}

/// The event's `(origin, seq)` from a publish answer (the returned cursor holds the
/// accepting node's origin at the new event's sequence), and whether it was a
/// duplicate (then the cursor is the first copy's, and `(0, 0)` is returned).
fn accepted_at(answer: &str, origin: u64) -> Option<(u64, u64, bool)> {
    let value: serde_json::Value = serde_json::from_str(answer).ok()?;
    if value["duplicate"] == true {
        return Some((0, 0, true));
    }
    let cursor = Cursor::parse(value["id"].as_str()?).ok()?;
    let seq = cursor.frontier.get(origin);
    (seq > 0).then_some((origin, seq, false))
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
