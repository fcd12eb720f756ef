//! Counters and gauges, rendered as Prometheus text. Plain atomics: cheap to bump
//! on the hot path, read only when `/metrics` is scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::refusal::ErrorKind;

#[derive(Debug, Default)]
pub struct Metrics {
    pub open_connections: AtomicU64,
    pub subscribers: AtomicU64,
    pub events_published: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_delivered: AtomicU64,
    pub events_written_directly: AtomicU64,
    pub slow_subscriber_disconnects: AtomicU64,
    pub write_stall_disconnects: AtomicU64,
    pub half_open_disconnects: AtomicU64,
    pub connections_refused_per_address: AtomicU64,
    pub replays_served: AtomicU64,
    pub replayed_events: AtomicU64,
    pub resets_sent: AtomicU64,
    /// Resumes from a cursor this cluster could not have issued (answered with reset).
    pub forged_cursors: AtomicU64,
    pub relay_gaps: AtomicU64,
    pub relay_events_received: AtomicU64,
    pub relay_rejected: AtomicU64,
    pub gossip_rejected: AtomicU64,
    /// Events and bytes evicted from replay history for `--replay.maxBytes`.
    pub history_evicted_events: AtomicU64,
    pub history_evicted_bytes: AtomicU64,
    /// Channel states without subscribers evicted for `--channels.max`.
    pub channels_evicted: AtomicU64,
    /// New channel states refused for `--channels.max` (subscribes and publishes got
    /// 503; relayed events for such a channel were dropped here).
    pub channels_refused: AtomicU64,
    request_errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl Metrics {
    pub fn request_error(&self, kind: ErrorKind) {
        self.request_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn request_errors(&self, kind: ErrorKind) -> u64 {
        self.request_errors[kind as usize].load(Relaxed)
    }

    /// Renders every metric; `gauges` are values owned by other parts (channels, history).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "sse_open_connections",
            "gauge",
            "Open HTTP connections.",
            self.open_connections.load(Relaxed),
        );
        metric(
            "sse_subscribers",
            "gauge",
            "Open event streams.",
            self.subscribers.load(Relaxed),
        );
        for (name, help, value) in gauges {
            metric(name, "gauge", help, *value);
        }
        metric(
            "sse_events_published_total",
            "counter",
            "Events accepted by this node.",
            self.events_published.load(Relaxed),
        );
        metric(
            "sse_events_duplicate_total",
            "counter",
            "Publishes dropped because their id was already in the replay window.",
            self.events_duplicate.load(Relaxed),
        );
        metric(
            "sse_events_delivered_total",
            "counter",
            "Events written to subscriber streams.",
            self.events_delivered.load(Relaxed),
        );
        metric(
            "sse_events_written_directly_total",
            "counter",
            "Of the events delivered, those the publishing append wrote whole to a waiting subscriber's socket itself, without waking the subscriber's task.",
            self.events_written_directly.load(Relaxed),
        );
        metric(
            "sse_slow_subscriber_disconnects_total",
            "counter",
            "Subscribers disconnected because they fell behind their buffer.",
            self.slow_subscriber_disconnects.load(Relaxed),
        );
        metric(
            "sse_write_stall_disconnects_total",
            "counter",
            "Connections closed because the client stopped reading.",
            self.write_stall_disconnects.load(Relaxed),
        );
        metric(
            "sse_half_open_disconnects_total",
            "counter",
            "Connections the kernel gave up on while no write was waiting: data or keep-alive probes unacknowledged for --http.server.writeTimeout (the client's host or network vanished).",
            self.half_open_disconnects.load(Relaxed),
        );
        metric(
            "sse_connections_refused_per_address_total",
            "counter",
            "Connections answered 429 because their client address had --http.server.maxConnectionsPerAddress open.",
            self.connections_refused_per_address.load(Relaxed),
        );
        metric(
            "sse_replays_served_total",
            "counter",
            "Subscriptions resumed from a Last-Event-ID.",
            self.replays_served.load(Relaxed),
        );
        metric(
            "sse_replayed_events_total",
            "counter",
            "Events sent from replay history.",
            self.replayed_events.load(Relaxed),
        );
        metric(
            "sse_resets_total",
            "counter",
            "Resumes that could not be proven complete and got a reset event.",
            self.resets_sent.load(Relaxed),
        );
        metric(
            "sse_cursors_refused_total",
            "counter",
            "Last-Event-IDs this cluster could not have issued (from the future, or past every sequence it assigned); each got a reset.",
            self.forged_cursors.load(Relaxed),
        );
        metric(
            "sse_relay_gaps_total",
            "counter",
            "Ranges of another node's events lost before reaching this node (signalled as event: gap).",
            self.relay_gaps.load(Relaxed),
        );
        metric(
            "sse_relay_events_received_total",
            "counter",
            "Events received from other nodes.",
            self.relay_events_received.load(Relaxed),
        );
        metric(
            "sse_relay_rejected_total",
            "counter",
            "Relay connections or frames refused (bad key, replay, malformed).",
            self.relay_rejected.load(Relaxed),
        );
        metric(
            "sse_gossip_rejected_total",
            "counter",
            "Gossip datagrams dropped (bad key, stale, malformed).",
            self.gossip_rejected.load(Relaxed),
        );
        metric(
            "sse_replay_evicted_events_total",
            "counter",
            "Events evicted from replay history, oldest first across channels, to stay within --replay.maxBytes.",
            self.history_evicted_events.load(Relaxed),
        );
        metric(
            "sse_replay_evicted_bytes_total",
            "counter",
            "Bytes of replay history evicted to stay within --replay.maxBytes.",
            self.history_evicted_bytes.load(Relaxed),
        );
        metric(
            "sse_channels_evicted_total",
            "counter",
            "Channels without subscribers dropped with their history to stay within --channels.max.",
            self.channels_evicted.load(Relaxed),
        );
        metric(
            "sse_channels_refused_total",
            "counter",
            "New channels refused at --channels.max with every channel subscribed (503, or a relayed event dropped here).",
            self.channels_refused.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sse_request_errors_total Refused requests by kind.\n# TYPE sse_request_errors_total counter"
        );
        for kind in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "sse_request_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.request_errors(kind)
            );
        }
        out
    }
}
