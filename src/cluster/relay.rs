//! The relay: every node serves its own accepted events (its outbox) as an ordered
//! stream, and pulls the stream of every live peer, resuming where it stopped.
//!
//! `GET /relay/v1?origin=<hex>&from=<seq>&node=<id>` answers 200 with a body of
//! relay frames (their format is `wire`'s; the events come encoded from the
//! `outbox`). A request for
//! another origin (the peer restarted) answers 410 with the current one in
//! `x-relay-origin`. `from=0&since=<ms>` starts at the first event accepted at or
//! after that wall time (with a gap first if some of those were already evicted): a
//! node that just started catches up on what was accepted while it was starting,
//! without replaying a peer's whole queue to new subscribers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use std::sync::Arc;

use super::crypto::{FrameOpener, RelayAnswer};
use super::drain::{OpenStream, PulledUpTo};
use super::outbox::{Outbox, RelayBatch};
use super::wire::{self, Frame, FrameReader, Framer};
use super::{ClusterSecret, MemberIps};
use crate::broker::Broker;
use crate::event::Origin;
use crate::faults::Bug;
use crate::log::{RateLimited, Untrusted};
use crate::transport::{Network, RemoteIp};

pub(crate) const PATH: &str = "/relay/v1";
const ORIGIN_HEADER: &str = "x-relay-origin";
/// The dialler's proof of the cluster key, bound to its exact request.
const AUTH_HEADER: &str = "x-relay-auth";
/// The server's proof of the key, bound to the dialler's.
const PROOF_HEADER: &str = "x-relay-proof";
/// Most events sent in one write.
const BATCH_EVENTS: usize = 256;
/// Most bytes of frames sent in one write (past its first event).
const BATCH_BYTES: usize = 256 * 1024;
/// A first pull of an origin asks for what it accepted since this long before this
/// node started (`since`): clocks of different hosts differ, and the margin errs
/// towards catching up more.
pub(crate) const FIRST_PULL_MARGIN_MS: u64 = 5_000;
/// A stream that asked for ticks gets one at most this often while it sends events,
/// and this long after its last events when it falls quiet.
const TICK_EVERY: Duration = Duration::from_millis(50);
/// The response header that says the stream carries ticks (its absence: an older
/// node, whose events ids then do not wait for).
const TICKS_HEADER: &str = "x-relay-ticks";

/// The readers of a relay without a cluster secret.
#[derive(Clone)]
pub(crate) enum OpenTo {
    /// Requests from the addresses gossip knows as members.
    Members(Arc<MemberIps>),
    /// Nobody: tokens protect the node's events, and only a secret can tell a member.
    Nobody,
}

/// Server side state.
#[derive(Clone)]
pub(crate) struct RelayServer {
    pub(crate) broker: Broker,
    /// This node's accepted events, encoded (the broker's outlet).
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) secret: Option<Arc<ClusterSecret>>,
    /// Who may read the relay when there is no secret to authenticate peers.
    pub(crate) open_to: OpenTo,
    pub(crate) ping: Duration,
    /// Shortest time between two writes of events on one stream: events accepted
    /// meanwhile wait and leave together (`--relay.batchInterval`; zero: at once).
    pub(crate) batch_interval: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Refused requests are warned about at most once per interval: anyone who
    /// reaches the port can send them (all are counted in `relay_rejected`).
    pub(crate) refusals: Arc<RateLimited>,
    /// True while the node drains before a stop: a stream that sent events ends at
    /// the end of the outbox, so its peer acknowledges them with its next `from`.
    pub(crate) draining: watch::Receiver<bool>,
    /// Where each peer's position is recorded, from its requests.
    pub(crate) pulled: Arc<PulledUpTo>,
}

#[derive(Debug, Deserialize)]
struct RelayQuery {
    origin: String,
    from: u64,
    #[serde(default)]
    since: u64,
    node: String,
    /// `1`: send `tick` frames (see `wire`). Outside the authenticated context, so
    /// that older nodes still check the request; one stripped costs only ticks.
    #[serde(default)]
    ticks: u8,
}

pub(crate) fn router(server: RelayServer) -> Router {
    Router::new().route(PATH, get(serve)).with_state(server)
}

/// The bytes that authenticate a relay request: both ends build them from the query.
fn request_context(origin: &str, from: u64, since: u64, node: &str) -> String {
    format!("GET {PATH} origin={origin} from={from} since={since} node={node}")
}

async fn serve(
    State(server): State<RelayServer>,
    query: Result<Query<RelayQuery>, axum::extract::rejection::QueryRejection>,
    remote: Option<Extension<RemoteIp>>,
    headers: HeaderMap,
) -> Response {
    if server.secret.is_none() {
        let member = match (&server.open_to, remote) {
            (OpenTo::Members(members), Some(Extension(RemoteIp(ip)))) => members.contains(ip),
            _ => false,
        };
        if !member {
            server.broker.metrics().relay_rejected.fetch_add(1, Relaxed);
            if let Some(unlogged) = server.refusals.allow() {
                tracing::warn!(
                    remote = ?remote.map(|Extension(RemoteIp(ip))| ip),
                    refused_unlogged = unlogged,
                    "refused a relay request from an address that is not a cluster member (more are counted in sse_relay_rejected_total)"
                );
            }
            let message = match server.open_to {
                OpenTo::Members(_) => "relay: not a cluster member",
                OpenTo::Nobody => {
                    "relay: closed (authorization is on and there is no cluster secret)"
                }
            };
            return (StatusCode::FORBIDDEN, message).into_response();
        }
    }
    let Ok(Query(query)) = query else {
        server.broker.metrics().relay_rejected.fetch_add(1, Relaxed);
        return (StatusCode::BAD_REQUEST, "relay: bad query").into_response();
    };
    let mut response_headers = HeaderMap::new();
    let mut framer = Framer::new(None);
    if let Some(secret) = &server.secret {
        let token = headers
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let context = request_context(&query.origin, query.from, query.since, &query.node);
        match secret.accept_relay_request(token, &context) {
            Ok(RelayAnswer { proof, sealer }) => {
                if let Ok(proof) = HeaderValue::from_str(&proof) {
                    response_headers.insert(PROOF_HEADER, proof);
                }
                framer = Framer::new(Some(sealer));
            }
            Err(error) => {
                server.broker.metrics().relay_rejected.fetch_add(1, Relaxed);
                if let Some(unlogged) = server.refusals.allow() {
                    tracing::warn!(
                        peer = %Untrusted(&query.node),
                        %error,
                        refused_unlogged = unlogged,
                        "refused a relay request (more are counted in sse_relay_rejected_total)"
                    );
                }
                return (StatusCode::UNAUTHORIZED, "relay: not authenticated").into_response();
            }
        }
    }
    let origin = server.broker.origin();
    let origin_header =
        HeaderValue::from_str(&format!("{origin:x}")).unwrap_or(HeaderValue::from_static("0"));
    if u64::from_str_radix(&query.origin, 16).ok() != Some(origin) {
        return (
            StatusCode::GONE,
            [(ORIGIN_HEADER, origin_header)],
            "relay: origin changed",
        )
            .into_response();
    }
    tracing::debug!(peer = %Untrusted(&query.node), from = query.from, "relay stream opened");
    let from = if query.from == 0 {
        server.outbox.first_since(query.since)
    } else {
        query.from
    };
    // The peer asks for `from` on: it applied everything before (see `drain`).
    server.pulled.record(&query.node, from);
    // Counted open until hyper drops the body (the peer closed the connection).
    let open = server.pulled.stream_opened(&query.node);
    let ticks = query.ticks == 1;
    let streaming = Streaming {
        server,
        framer,
        next: from,
        sent: false,
        open,
        last_write: None,
        ticks,
        tick_owed: ticks,
        last_tick: None,
        pending_tick: None,
    };
    let stream = futures_util::stream::unfold(streaming, |mut streaming| async move {
        let chunk = streaming.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), streaming))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response_headers.insert(ORIGIN_HEADER, origin_header);
    if ticks {
        response_headers.insert(TICKS_HEADER, HeaderValue::from_static("1"));
    }
    response_headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-sse-cluster-relay"),
    );
    response.headers_mut().extend(response_headers);
    response
}

enum Woke {
    Event,
    Tick,
    Ping,
}

/// One relay response in progress: where it is in the outbox and when it last wrote.
struct Streaming {
    server: RelayServer,
    framer: Framer,
    /// The next sequence to send.
    next: u64,
    /// Whether the stream has sent a chunk yet.
    sent: bool,
    open: OpenStream,
    /// When the last chunk of events left, for `batch_interval`.
    last_write: Option<Instant>,
    /// Whether the peer asked for ticks.
    ticks: bool,
    /// Events (or a gap) left since the last tick: one is owed.
    tick_owed: bool,
    /// When the last tick left, for `TICK_EVERY`.
    last_tick: Option<Instant>,
    /// A tick to send before anything else: its time was read before the events
    /// just sent were read, and nothing was left after them.
    pending_tick: Option<u64>,
}

impl Streaming {
    /// The next chunk of the body: every event the outbox holds from `next` on (up to
    /// `BATCH_EVENTS` and `BATCH_BYTES`), a gap, a tick, or a ping after a quiet
    /// `ping`; `None` ends the body. Polled again only once hyper took the previous
    /// chunk.
    ///
    /// A tick's time is read before the outbox is: every event accepted before it
    /// is in that read or an earlier one, so the tick follows them all.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.sent {
            self.server
                .pulled
                .sent(&self.open.node, self.next.saturating_sub(1));
        }
        if let Some(ms) = self.pending_tick.take() {
            return Some(self.framer.tick(ms));
        }
        let server = &self.server;
        let mut ping = tokio::time::interval_at(Instant::now() + server.ping, server.ping);
        let mut ping_due = false;
        loop {
            if let Some(due) = paced_until(self.last_write, server.batch_interval) {
                if server.outbox.has(self.next) {
                    wait_until(server, due).await?;
                }
            }
            let read_at = server.broker.now_ms();
            match server.outbox.read(self.next, BATCH_EVENTS, BATCH_BYTES) {
                RelayBatch::Gap { upto } => {
                    self.next = upto + 1;
                    self.sent = true;
                    self.tick_owed = self.ticks;
                    return Some(self.framer.gap(upto));
                }
                RelayBatch::Events(events) if !events.is_empty() => {
                    self.next += events.len() as u64;
                    self.sent = true;
                    if !server.batch_interval.is_zero() {
                        self.last_write = Some(Instant::now());
                    }
                    if self.ticks {
                        // The tick goes next only if these were all there was.
                        if tick_due(self.last_tick) && !server.outbox.has(self.next) {
                            self.pending_tick = Some(read_at);
                            self.last_tick = Some(Instant::now());
                            self.tick_owed = false;
                        } else {
                            self.tick_owed = true;
                        }
                    }
                    return Some(self.framer.events(&events));
                }
                RelayBatch::Events(_) => {}
            }
            // Everything was sent: a tick owed since the last one, or in place of a
            // ping, says so.
            if self.ticks && (ping_due || (self.tick_owed && tick_due(self.last_tick))) {
                self.last_tick = Some(Instant::now());
                self.tick_owed = false;
                return Some(self.framer.tick(read_at));
            }
            if ping_due {
                return Some(self.framer.ping());
            }
            // While draining, a stream that sent something ends here: the peer's
            // next request says what it applied.
            if self.sent && *server.draining.borrow() {
                return None;
            }
            let tick_at = match (self.tick_owed, self.last_tick) {
                (true, Some(last)) => Some(last + TICK_EVERY),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
            let woke = {
                let mut shutdown = server.shutdown.clone();
                let mut draining = server.draining.clone();
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return None,
                    _ = draining.wait_for(|d| *d), if self.sent => Woke::Event,
                    _ = server.outbox.wait(self.next) => Woke::Event,
                    _ = sleep_until_some(tick_at), if tick_at.is_some() => Woke::Tick,
                    _ = ping.tick() => Woke::Ping,
                }
            };
            match woke {
                Woke::Ping => ping_due = true,
                Woke::Event | Woke::Tick => {}
            }
        }
    }
}

/// Whether a tick may go now, the last one having left at `last_tick`.
fn tick_due(last_tick: Option<Instant>) -> bool {
    last_tick.is_none_or(|last| last.elapsed() >= TICK_EVERY)
}

async fn sleep_until_some(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// When a stream that last wrote events at `last_write` may write again, if that is
/// still to come: `interval` after its last write.
fn paced_until(last_write: Option<Instant>, interval: Duration) -> Option<Instant> {
    if interval.is_zero() {
        return None;
    }
    let due = last_write? + interval;
    (Instant::now() < due).then_some(due)
}

/// Waits until `due`, so that the events accepted meanwhile leave in one write;
/// `None` when the node shuts down meanwhile.
async fn wait_until(server: &RelayServer, due: Instant) -> Option<()> {
    let mut shutdown = server.shutdown.clone();
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|s| *s) => None,
        _ = tokio::time::sleep_until(due) => Some(()),
    }
}

/// A peer to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerTarget {
    pub(crate) node_id: String,
    pub(crate) http_addr: SocketAddr,
    pub(crate) origin: Origin,
}

/// Why one relay connection ended.
#[derive(Debug)]
enum PullEnd {
    /// The peer runs a new generation; this puller is done.
    OriginChanged,
    /// The peer ended a stream it had opened (it drains before a stop): reconnect
    /// at once, which tells it how far this node applied its events.
    Ended,
    Failed(String),
}

/// Pulls `peer`'s events into `broker` until `stop`, reconnecting after failures and
/// resuming after the last sequence applied; `progress` is the next sequence to ask
/// for, shared with the caller (it outlives this puller).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull<N: Network>(
    network: N,
    broker: Broker,
    peer: PeerTarget,
    self_id: String,
    timeout: Duration,
    secret: Option<Arc<ClusterSecret>>,
    progress: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = pull_once(
            &network,
            &broker,
            &peer,
            &self_id,
            timeout,
            secret.as_deref(),
            &progress,
        );
        let result = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            result = attempt => result,
        };
        match result {
            PullEnd::OriginChanged => {
                tracing::info!(peer = %Untrusted(&peer.node_id), "peer restarted with a new generation");
                return;
            }
            PullEnd::Ended => {
                // Soon, not in a tight loop: a peer that keeps ending streams costs
                // a request every 10 ms at most.
                backoff = Duration::from_millis(10);
                tracing::debug!(peer = %Untrusted(&peer.node_id), next = progress.load(Relaxed), "relay stream ended by the peer; resuming");
            }
            PullEnd::Failed(reason) => {
                let next = progress.load(Relaxed);
                tracing::debug!(
                    peer = %Untrusted(&peer.node_id),
                    reason = %Untrusted(&reason),
                    next,
                    "relay connection ended; retrying"
                );
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn pull_once<N: Network>(
    network: &N,
    broker: &Broker,
    peer: &PeerTarget,
    self_id: &str,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
    progress: &AtomicU64,
) -> PullEnd {
    let failed = |what: &str, e: &dyn std::fmt::Display| PullEnd::Failed(format!("{what}: {e}"));
    let stream = match tokio::time::timeout(timeout, network.connect(peer.http_addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed("connect", &e),
        Err(_) => return PullEnd::Failed("connect timed out".into()),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    {
        Ok(pair) => pair,
        Err(e) => return failed("handshake", &e),
    };
    let connection = tokio::spawn(connection);
    let _abort = AbortOnDrop(connection);
    let mut since = broker.started_ms().saturating_sub(FIRST_PULL_MARGIN_MS);
    let mut next = progress.load(Relaxed);
    if next > 0 && broker.planted(Bug::RelayResumeOffByOne) {
        // The planted bug: the position taken for the last event applied.
        next += 1;
    }
    let mut from = next;
    if broker.dedup_disabled() {
        // The simulation's fault: forget the position, so a reconnect re-sends
        // everything and only deduplication could have hidden it.
        (from, since) = (0, 0);
    }
    let uri = format!(
        "{PATH}?origin={:x}&from={from}&since={since}&node={self_id}&ticks=1",
        peer.origin
    );
    let mut request = axum::http::Request::get(uri).header("host", peer.http_addr.to_string());
    let mut token = None;
    if let Some(secret) = secret {
        let origin = format!("{:x}", peer.origin);
        let context = request_context(&origin, from, since, self_id);
        let header = secret.relay_request_header(&context);
        request = request.header(AUTH_HEADER, header.as_str());
        token = Some(header);
    }
    let request = match request.body(http_body_util::Empty::new()) {
        Ok(request) => request,
        Err(e) => return failed("request", &e),
    };
    let response = match tokio::time::timeout(timeout, sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return failed("request", &e),
        Err(_) => return PullEnd::Failed("request timed out".into()),
    };
    if response.status() == StatusCode::GONE {
        return PullEnd::OriginChanged;
    }
    if response.status() != StatusCode::OK {
        return PullEnd::Failed(format!("status {}", response.status()));
    }
    if !response.headers().contains_key(TICKS_HEADER) {
        // An older node: its events are not waited for (ids as before ticks).
        broker.relay_untimed(peer.origin);
    }
    let mut opener: Option<FrameOpener> = None;
    if let (Some(secret), Some(token)) = (secret, &token) {
        let proof = response
            .headers()
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match secret.verify_relay_response(token, proof) {
            Ok(o) => opener = Some(o),
            Err(e) => {
                broker.metrics().relay_rejected.fetch_add(1, Relaxed);
                return failed("peer did not prove the cluster key", &e);
            }
        }
    }
    let mut body = response.into_body();
    let mut reader = FrameReader::default();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return PullEnd::Failed("peer silent past --http.client.timeout".into()),
            Ok(None) => return PullEnd::Ended,
            Ok(Some(Err(e))) => return failed("read", &e),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        reader.extend(&data);
        let applied = apply_frames(broker, peer.origin, &mut reader, opener.as_mut(), &mut next);
        progress.store(next, Relaxed);
        if let Err(reason) = applied {
            broker.metrics().relay_rejected.fetch_add(1, Relaxed);
            return PullEnd::Failed(reason);
        }
    }
}

/// Opens (with a key) and applies every whole frame `reader` holds.
pub(crate) fn apply_frames(
    broker: &Broker,
    origin: Origin,
    reader: &mut FrameReader,
    mut opener: Option<&mut FrameOpener>,
    next: &mut u64,
) -> Result<(), String> {
    while let Some(sealed) = reader.next_frame()? {
        let opened;
        let payload: &[u8] = match opener.as_deref_mut() {
            Some(opener) => {
                opened = opener
                    .open(&sealed)
                    .map_err(|e| format!("relay frame: {e}"))?;
                &opened
            }
            None => &sealed,
        };
        apply(broker, origin, payload, next)?;
    }
    Ok(())
}

/// Applies one frame from `origin`; `next` is the sequence expected next (0: any).
fn apply(broker: &Broker, origin: Origin, payload: &[u8], next: &mut u64) -> Result<(), String> {
    match wire::decode(payload)? {
        Frame::Ping => Ok(()),
        Frame::Tick(ms) => {
            broker.relay_tick(origin, ms);
            Ok(())
        }
        Frame::Gap { upto } => {
            let after = after_seq(upto)?;
            if upto >= *next && broker.planted(Bug::SilentOutboxGap) {
                // The planted bug: past the hole without a word to subscribers.
                *next = after;
                return Ok(());
            }
            if upto >= *next {
                tracing::warn!(
                    origin = format_args!("{origin:x}"),
                    upto,
                    "relay gap: a peer's events were lost"
                );
                broker.remote_gap(origin, upto);
                *next = after;
            }
            Ok(())
        }
        Frame::Event(event) => {
            let after = after_seq(event.seq)?;
            if event.seq < *next && !broker.dedup_disabled() {
                return Ok(());
            }
            if *next != 0 && event.seq > *next {
                broker.remote_gap(origin, event.seq - 1);
            }
            *next = after;
            let event = event.check()?;
            broker.metrics().relay_events_received.fetch_add(1, Relaxed);
            broker.apply_remote(origin, event.accepted());
            Ok(())
        }
    }
}

/// The sequence after `seq`. No honest peer reaches `u64::MAX`; a frame that claims
/// it is refused rather than wrapping `next` to 0 ("accept anything").
fn after_seq(seq: u64) -> Result<u64, String> {
    seq.checked_add(1)
        .ok_or_else(|| format!("relay sequence {seq} is out of range"))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> Broker {
        crate::fuzzing::small_broker(1_000)
    }

    /// Bytes of a frame's length prefix.
    const LEN_PREFIX: usize = 4;

    /// Plain frames of `payloads`, as a relay body carries them.
    fn framed(payloads: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload.as_bytes());
        }
        out
    }

    fn body(payloads: &[&str]) -> FrameReader {
        let mut reader = FrameReader::default();
        reader.extend(&framed(payloads));
        reader
    }

    // Found by the relay_frames fuzz target: `upto + 1` overflowed (a panic in
    // debug builds; in release `next` wrapped to 0, which accepts any sequence).
    #[test]
    fn a_sequence_at_u64_max_is_refused_without_overflow() {
        let broker = broker();
        for frame in [
            r#"{"gap":{"upto":18446744073709551615}}"#,
            r#"{"event":{"seq":18446744073709551615,"route":"all","publish":{"data":1}}}"#,
        ] {
            let mut next = 5;
            let result = apply_frames(&broker, 7, &mut body(&[frame]), None, &mut next);
            assert!(result.is_err(), "{frame}");
            assert_eq!(next, 5, "{frame}");
        }
        let mut next = 5;
        let ok = r#"{"gap":{"upto":18446744073709551614}}"#;
        assert_eq!(
            apply_frames(&broker, 7, &mut body(&[ok]), None, &mut next),
            Ok(())
        );
        assert_eq!(next, u64::MAX);
    }

    /// A relay stream over `outbox` to peer "p", with `interval` between writes.
    fn streaming(outbox: &Arc<Outbox>, interval: Duration) -> (Streaming, Controls) {
        streaming_with(outbox, interval, false)
    }

    /// The node's switches a stream watches (dropping one would wake it for good).
    struct Controls {
        shutdown: watch::Sender<bool>,
        _draining: watch::Sender<bool>,
    }

    fn streaming_with(
        outbox: &Arc<Outbox>,
        interval: Duration,
        ticks: bool,
    ) -> (Streaming, Controls) {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (draining_tx, draining) = watch::channel(false);
        let pulled = Arc::new(PulledUpTo::default());
        let server = RelayServer {
            broker: broker(),
            outbox: outbox.clone(),
            secret: None,
            open_to: OpenTo::Nobody,
            ping: Duration::from_secs(1),
            batch_interval: interval,
            shutdown,
            refusals: Default::default(),
            draining,
            pulled: pulled.clone(),
        };
        let open = pulled.stream_opened("p");
        let streaming = Streaming {
            server,
            framer: Framer::new(None),
            next: 1,
            sent: false,
            open,
            last_write: None,
            ticks,
            tick_owed: ticks,
            last_tick: None,
            pending_tick: None,
        };
        let controls = Controls {
            shutdown: shutdown_tx,
            _draining: draining_tx,
        };
        (streaming, controls)
    }

    /// Accepts events `from..=to` into `outbox`, as the broker does after a publish.
    fn accept(outbox: &Outbox, from: u64, to: u64) {
        use crate::broker::{Accepted, Outlet, Route};
        for seq in from..=to {
            let publish = crate::event::Publish {
                id: None,
                event: None,
                data: seq.to_string(),
                retry: None,
            };
            let route = Route::Channel("c");
            outbox.accepted(
                seq,
                Accepted {
                    seq,
                    route,
                    publish: &publish,
                },
            );
        }
        outbox.flush();
    }

    /// The sequences of the events in one chunk of a relay body.
    fn sequences(chunk: &[u8]) -> Vec<u64> {
        let mut reader = FrameReader::default();
        reader.extend(chunk);
        let mut seqs = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            if let Frame::Event(event) = wire::decode(&frame).unwrap() {
                seqs.push(event.seq);
            }
        }
        seqs
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_come_within_the_batch_interval_leave_together() {
        let interval = Duration::from_millis(5);
        let outbox = Arc::new(Outbox::new(100, 1 << 20));
        let (mut stream, _shutdown) = streaming(&outbox, interval);
        // A first event after a quiet time leaves at once.
        accept(&outbox, 1, 1);
        let start = Instant::now();
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [1]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The next ones wait for the interval, then leave in one write.
        accept(&outbox, 2, 3);
        let more = outbox.clone();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            accept(&more, 4, 4);
        });
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [2, 3, 4]);
        assert_eq!(start.elapsed(), interval);
        later.await.unwrap();
        // After a quiet interval, at once again.
        tokio::time::sleep(interval).await;
        accept(&outbox, 5, 5);
        let at = Instant::now();
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [5]);
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_batch_interval_every_write_leaves_at_once() {
        let outbox = Arc::new(Outbox::new(100, 1 << 20));
        let (mut stream, _shutdown) = streaming(&outbox, Duration::ZERO);
        let start = Instant::now();
        for seq in 1..=3 {
            accept(&outbox, seq, seq);
            assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [seq]);
        }
        // What is there already leaves in one chunk.
        accept(&outbox, 4, 6);
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [4, 5, 6]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_a_stream_that_waits_for_its_interval() {
        let outbox = Arc::new(Outbox::new(100, 1 << 20));
        let (mut stream, controls) = streaming(&outbox, Duration::from_secs(60));
        let shutdown = controls.shutdown;
        accept(&outbox, 1, 1);
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [1]);
        accept(&outbox, 2, 2);
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            shutdown.send_replace(true);
        });
        let start = Instant::now();
        assert!(stream.next_chunk().await.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        stop.await.unwrap();
    }

    /// What one chunk holds: event sequences, and tick times.
    fn contents(chunk: &[u8]) -> (Vec<u64>, Vec<u64>) {
        let mut reader = FrameReader::default();
        reader.extend(chunk);
        let (mut seqs, mut ticks) = (Vec::new(), Vec::new());
        while let Some(frame) = reader.next_frame().unwrap() {
            match wire::decode(&frame).unwrap() {
                Frame::Event(event) => seqs.push(event.seq),
                Frame::Tick(ms) => ticks.push(ms),
                _ => {}
            }
        }
        (seqs, ticks)
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_follows_the_events_it_covers_at_most_every_tick_interval() {
        let outbox = Arc::new(Outbox::new(100, 1 << 20));
        let (mut stream, _shutdown) = streaming_with(&outbox, Duration::ZERO, true);
        let clock = stream.server.broker.clone();
        let start = Instant::now();
        // A new stream owes a tick: it goes at once.
        let at = clock.now_ms();
        assert_eq!(
            contents(&stream.next_chunk().await.unwrap()),
            (vec![], vec![at])
        );
        // Events: a tick right after them only once TICK_EVERY has passed.
        accept(&outbox, 1, 2);
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [1, 2]);
        tokio::time::sleep(TICK_EVERY).await;
        accept(&outbox, 3, 3);
        let read_at = clock.now_ms();
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [3]);
        assert_eq!(
            contents(&stream.next_chunk().await.unwrap()),
            (vec![], vec![read_at]),
            "the tick that covers event 3 comes next, with the time read before it"
        );
        // Within the interval: the events go at once, their tick once it is due.
        tokio::time::sleep(Duration::from_millis(10)).await;
        accept(&outbox, 4, 4);
        assert_eq!(sequences(&stream.next_chunk().await.unwrap()), [4]);
        let before = Instant::now();
        let (seqs, ticks) = contents(&stream.next_chunk().await.unwrap());
        assert_eq!(seqs, Vec::<u64>::new());
        assert_eq!(ticks, [clock.now_ms()]);
        assert_eq!(before.elapsed(), TICK_EVERY - Duration::from_millis(10));
        // Quiet: a tick in place of each ping.
        let quiet = Instant::now();
        let (_, ticks) = contents(&stream.next_chunk().await.unwrap());
        assert_eq!(ticks.len(), 1);
        assert_eq!(quiet.elapsed(), Duration::from_secs(1));
        assert!(start.elapsed() > Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_tick_claims_events_still_waiting() {
        // More than one write's worth: the first write cannot be followed by a tick.
        let outbox = Arc::new(Outbox::new(1_000, 1 << 20));
        let (mut stream, _shutdown) = streaming_with(&outbox, Duration::ZERO, true);
        let _ = stream.next_chunk().await.unwrap();
        tokio::time::sleep(TICK_EVERY).await;
        accept(&outbox, 1, BATCH_EVENTS as u64 + 1);
        let (seqs, ticks) = contents(&stream.next_chunk().await.unwrap());
        assert_eq!(seqs.len(), BATCH_EVENTS);
        assert!(ticks.is_empty());
        let (seqs, ticks) = contents(&stream.next_chunk().await.unwrap());
        assert_eq!(seqs, [BATCH_EVENTS as u64 + 1]);
        assert!(ticks.is_empty());
        let (seqs, ticks) = contents(&stream.next_chunk().await.unwrap());
        assert!(seqs.is_empty());
        assert_eq!(ticks.len(), 1, "the tick comes once all was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_asked_for_ticks_sends_none() {
        let outbox = Arc::new(Outbox::new(100, 1 << 20));
        let (mut stream, _shutdown) = streaming(&outbox, Duration::ZERO);
        accept(&outbox, 1, 1);
        assert_eq!(
            contents(&stream.next_chunk().await.unwrap()),
            (vec![1], vec![])
        );
        let chunk = stream.next_chunk().await.unwrap();
        assert_eq!(contents(&chunk), (vec![], vec![]));
        assert_eq!(&chunk[LEN_PREFIX..], br#""ping""#);
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let frames = framed(&[r#""ping""#, r#"{"gap":{"upto":3}}"#]);
        for split in 0..=frames.len() {
            let mut reader = FrameReader::default();
            let mut next = 0;
            reader.extend(&frames[..split]);
            apply_frames(&broker(), 7, &mut reader, None, &mut next).unwrap();
            reader.extend(&frames[split..]);
            apply_frames(&broker(), 7, &mut reader, None, &mut next).unwrap();
            assert_eq!(next, 4, "split at {split}");
            assert!(reader.is_empty());
        }
    }
}
