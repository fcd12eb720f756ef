//! The broker: channels, subscribers, replay history and channel lifecycle on one
//! node. Pure state and no sockets; the only async piece is waiting for the next
//! event, so everything here is testable without a network.
//!
//! One file per job; every one of them works on the `State` behind one lock:
//!
//! - `publish`: accepting events (one channel, one client, every channel, relayed
//!   from a peer) and the gaps peers report.
//! - `subscribe`: opening a subscription (client ids, resume, `reset`) and the visits
//!   of every subscriber (keep-alives, the end of every stream).
//! - `stream`: a subscriber's side, what it gets next ([`Subscription`], [`Next`]).
//! - `multi`: a stream of several channels, one subscription per channel
//!   ([`MultiSubscription`]); `multi_cursor`: its cursor, one per channel;
//!   `pattern`: a part of such a stream that follows a prefix pattern.
//! - `lifecycle`: channel states made and removed, `--channels.max`, expiry, and the
//!   counts `/status` and `/metrics` read.
//! - `history`: appends and the node-wide byte bound (`--replay.maxBytes`).
//! - `accepted`: the typed events the broker hands the relay ([`Outlet`]) and takes
//!   from it ([`Accepted`], [`Route`]); their wire format is the cluster's.
//! - `channel`: one channel's log and subscribers, and who an append is for;
//!   `fanout`: the wakes and direct socket writes an append leaves to do; `ledger`:
//!   the node-wide order the limits evict in; `broadcast`: idempotency keys of
//!   publishes to every channel.

mod accepted;
mod broadcast;
mod channel;
mod fanout;
mod history;
mod ledger;
mod lifecycle;
mod multi;
mod multi_cursor;
mod pattern;
mod publish;
mod stream;
mod subscribe;
mod watermark;

use std::collections::{BTreeMap, HashMap};
use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::Clock;
use crate::event::{Cursor, Origin};
use crate::metrics::Metrics;
pub use accepted::{Accepted, Outlet, Route};
use broadcast::BroadcastIds;
use channel::Channel;
pub use channel::Entry;
use fanout::Fanout;
pub use fanout::Sink;
use ledger::Ledger;
pub use multi::{wrap_data, ManySubscribeError, MultiSubscription};
pub use multi_cursor::MAX_STREAM_CURSOR_LEN;
pub use pattern::pattern_prefix;
use pattern::Feed;
pub use stream::{Next, Subscription};

/// The bounds a broker keeps: its part of the node's [`crate::Config`].
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Events kept per channel for `Last-Event-ID` resume (`--replay.events`).
    pub replay_events: usize,
    /// Age after which events leave the replay history (`--replay.age`).
    pub replay_age: Duration,
    /// How many events a subscriber may fall behind before it is disconnected
    /// (`--subscriber.buffer`).
    pub subscriber_buffer: usize,
    /// Bounds of the queue of accepted events kept for peers that are away (the
    /// relay's outbox, which the node builds from them: `--relay.queueEvents`,
    /// `--relay.queueBytes`). The broker reads the first: how far past what this
    /// node saw of another origin a cursor may be and still be one the cluster
    /// issued.
    pub relay_queue_events: usize,
    pub relay_queue_bytes: usize,
    /// Bytes of replay history across all channels (see [`Entry::cost`]); past it the
    /// node's oldest events are evicted first, whatever their channel
    /// (`--replay.maxBytes`).
    pub replay_max_bytes: usize,
    /// Channel states (with subscribers or only history) this node keeps
    /// (`--channels.max`).
    pub max_channels: usize,
    /// Simulation-only faults; only builds with the `testing` feature have them.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub faults: crate::faults::Faults,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            replay_events: 1000,
            replay_age: Duration::from_secs(300),
            subscriber_buffer: 512,
            relay_queue_events: 10_000,
            relay_queue_bytes: 32 * 1024 * 1024,
            replay_max_bytes: 256 * 1024 * 1024,
            max_channels: 100_000,
            #[cfg(feature = "testing")]
            faults: Default::default(),
        }
    }
}

/// A cheap handle to one node's broker state.
#[derive(Debug, Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    origin: Origin,
    clock: Clock,
    started_ms: u64,
    settings: BrokerSettings,
    metrics: Arc<Metrics>,
    next_subscriber: AtomicU64,
    /// The key of the client ids this node assigns (see [`Broker::assigned_client_id`]):
    /// drawn from the process's random source at start, so the ids cannot be guessed
    /// from the origin and a counter.
    client_id_key: RandomState,
    state: Mutex<State>,
    /// Where this node's accepted events go for peers (none: nowhere).
    outlet: Option<Arc<dyn Outlet>>,
    /// Set once the node closes its streams: every subscription ends.
    closing: AtomicBool,
    /// The last keep-alive sweep's threshold (ms): a stream that sent anything after
    /// it was not silent. A stream of several channels checks it, since the sweep
    /// marks each of its parts on its own.
    keep_alive_silent_since_ms: AtomicU64,
    /// How far this node is caught up on each origin it follows: the time of ids.
    watermark: watermark::Watermark,
}

#[derive(Debug)]
struct State {
    /// Last sequence assigned by this origin. Assigned under the state lock together
    /// with the append and the handover to the outlet, so every channel and every
    /// peer sees this origin's events in sequence order.
    last_seq: u64,
    channels: BTreeMap<Arc<str>, Arc<Channel>>,
    /// The feeds of the patterns with subscribers here, by prefix (see `pattern`).
    patterns: BTreeMap<Arc<str>, Arc<Feed>>,
    /// Replay bytes and eviction order across channels.
    ledger: Ledger,
    /// Wall time (ms) just after the last time this node gave up events still inside the
    /// replay window together with their channel state (a channel evicted for
    /// `max_channels`, a relayed event dropped, a channel whose history was evicted
    /// for `replay_max_bytes` and then removed). A channel state created later cannot
    /// vouch for a cursor taken before it (one taken in the same millisecond as the
    /// loss may predate it, hence "just after").
    dropped_ms: u64,
    /// The last publish to every channel that passed channels without subscribers by
    /// (their history does not get it): its ledger stamp and the millisecond after it.
    /// A channel that was dormant before that stamp cannot vouch for its history
    /// before that time.
    broadcast_skipped: (u64, u64),
    /// What this node knows of each other origin (see [`Remote`]).
    remote: HashMap<Origin, Remote>,
    /// Publisher ids of this node's publishes to every channel, in the replay window:
    /// a retry is a duplicate without looking into any channel.
    broadcast_ids: BroadcastIds,
    /// When each limit was last logged, so a node at its limit warns once a minute.
    warned_bytes_ms: Option<u64>,
    warned_channels_ms: Option<u64>,
}

/// What a node knows of another origin.
#[derive(Debug, Default, Clone, Copy)]
struct Remote {
    /// Highest sequence seen (relayed, announced in gossip, or announced as a gap):
    /// a cursor far beyond it was not issued by this cluster.
    seen: u64,
    /// Highest sequence applied here from its relay stream (which comes in order).
    applied: u64,
    /// Set once the origin's process has ended for good (its node came back as a
    /// new origin, or left): the last sequence it announced. Of what it accepted up
    /// to there, what this node has not applied will never reach it.
    gone: Option<u64>,
}

/// At most one warning a minute per limit.
const WARN_EVERY_MS: u64 = 60_000;

fn warn_due(last: &mut Option<u64>, now_ms: u64) -> bool {
    let due = last.is_none_or(|at| now_ms >= at.saturating_add(WARN_EVERY_MS));
    if due {
        *last = Some(now_ms);
    }
    due
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The cursor after the event (for a single channel), usable as `Last-Event-ID`.
    pub id: Option<String>,
    /// Local subscribers the event was queued for.
    pub delivered: usize,
    /// The publisher id was already in the replay window; nothing was delivered.
    pub duplicate: bool,
    /// The channels it went to.
    pub channels: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// Another connection on this channel already uses this client id.
    ClientTaken,
    /// The channel has no state here and none can be made.
    ChannelsFull(ChannelsFull),
}

/// This node holds its maximum of channel states and every one has subscribers, so
/// a new channel cannot be made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelsFull {
    /// The configured maximum (`--channels.max`).
    pub limit: usize,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy)]
pub enum Resume<'a> {
    /// Only events published from now on.
    Live,
    /// The events after this cursor, then live.
    From(&'a Cursor),
    /// The client sent an id this broker did not issue: a reset, then live.
    Unknown,
}

/// Counts for `/metrics` and for tests of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStats {
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Channel states kept only for their replay history.
    pub dormant_channels: usize,
    pub history_events: usize,
    /// Bytes of replay history, as `--replay.maxBytes` counts them.
    pub history_bytes: usize,
    /// Bytes counted for channel states (see `ledger::channel_cost`), also inside
    /// `--replay.maxBytes`.
    pub channel_state_bytes: usize,
    pub subscribers: usize,
}

impl Broker {
    /// A broker whose accepted events go nowhere else (a node alone, or a test).
    pub fn new(
        origin: Origin,
        clock: Clock,
        settings: BrokerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::build(origin, clock, settings, metrics, None)
    }

    /// A broker that hands every event it accepts to `outlet`, from the first on.
    pub fn with_outlet(
        origin: Origin,
        clock: Clock,
        settings: BrokerSettings,
        metrics: Arc<Metrics>,
        outlet: Arc<dyn Outlet>,
    ) -> Self {
        Self::build(origin, clock, settings, metrics, Some(outlet))
    }

    fn build(
        origin: Origin,
        clock: Clock,
        settings: BrokerSettings,
        metrics: Arc<Metrics>,
        outlet: Option<Arc<dyn Outlet>>,
    ) -> Self {
        Broker {
            shared: Arc::new(Shared {
                origin,
                clock,
                started_ms: clock.now_ms(),
                metrics,
                next_subscriber: AtomicU64::new(1),
                client_id_key: RandomState::new(),
                state: Mutex::new(State {
                    last_seq: 0,
                    channels: BTreeMap::new(),
                    patterns: BTreeMap::new(),
                    ledger: Ledger::default(),
                    dropped_ms: 0,
                    broadcast_skipped: (0, 0),
                    remote: HashMap::new(),
                    broadcast_ids: BroadcastIds::default(),
                    warned_bytes_ms: None,
                    warned_channels_ms: None,
                }),
                outlet,
                closing: AtomicBool::new(false),
                keep_alive_silent_since_ms: AtomicU64::new(0),
                watermark: watermark::Watermark::new(),
                settings,
            }),
        }
    }

    pub fn origin(&self) -> Origin {
        self.shared.origin
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn replay_cutoff(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.shared.settings.replay_age.as_millis() as u64)
    }

    /// This node's wall time (ms).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The time an id made at `now_ms` carries: now, or earlier while this node
    /// lags behind an origin it follows (see `watermark`).
    fn id_time(&self, now_ms: u64) -> u64 {
        self.shared.watermark.id_time(now_ms)
    }

    /// The origins this node follows (the newest generation of every peer gossip
    /// lists and that did not leave), each with the time it starts at when new:
    /// ids wait for each until its relay says this node caught up.
    pub fn follow_origins(&self, origins: &[(Origin, u64)]) {
        self.shared.watermark.follow(origins);
    }

    /// `origin`'s relay says every event it accepted before `ms` (its clock) has
    /// been applied here.
    pub fn relay_tick(&self, origin: Origin, ms: u64) {
        self.shared
            .watermark
            .tick(origin, ms, self.shared.clock.now_ms());
    }

    /// `origin`'s relay sends no ticks (an older version): ids do not wait for it.
    pub fn relay_untimed(&self, origin: Origin) {
        self.shared.watermark.untimed(origin);
    }

    /// Wall time (ms) at which this broker started.
    pub fn started_ms(&self) -> u64 {
        self.shared.started_ms
    }

    /// Most events one batch may carry: a subscriber must be able to take a whole
    /// batch without falling further behind than its buffer, and the relay queue
    /// must hold it whole.
    pub fn max_batch(&self) -> usize {
        let settings = &self.shared.settings;
        settings.subscriber_buffer.min(settings.relay_queue_events)
    }

    /// Whether relayed duplicates are applied anyway (simulation-only fault).
    pub fn dedup_disabled(&self) -> bool {
        self.planted(crate::faults::Bug::DedupOff)
    }

    /// Whether a simulation-only planted bug is on (never without the `testing`
    /// feature).
    pub fn planted(&self, bug: crate::faults::Bug) -> bool {
        #[cfg(feature = "testing")]
        return self.shared.settings.faults.has(bug);
        #[cfg(not(feature = "testing"))]
        {
            let _ = bug;
            false
        }
    }

    /// Does what appends left for after the locks: wakes and direct writes.
    fn finish(&self, fanout: Fanout) {
        let closing = self.shared.closing.load(Relaxed);
        let handed = fanout.finish(self.shared.clock.now_ms(), closing);
        let metrics = &self.shared.metrics;
        if handed.events > 0 {
            metrics
                .events_delivered
                .fetch_add(handed.events as u64, Relaxed);
        }
        if handed.whole > 0 {
            metrics
                .events_written_directly
                .fetch_add(handed.whole as u64, Relaxed);
        }
    }
}

#[cfg(test)]
impl Broker {
    /// [`Broker::apply_remote`] of an event to `channel` (`None`: every channel).
    fn relayed(
        &self,
        origin: Origin,
        seq: u64,
        channel: Option<&str>,
        publish: &crate::event::Publish,
    ) -> usize {
        let route = channel.map_or(Route::All, Route::Channel);
        self.apply_remote(
            origin,
            Accepted {
                seq,
                route,
                publish,
            },
        )
    }
}

#[cfg(test)]
mod multi_tests;
#[cfg(test)]
mod pattern_tests;
#[cfg(test)]
mod tests;
