//! The broker: channels, subscribers, replay history and channel lifecycle on one
//! node. Pure state and no sockets; the only async piece is waiting for the next
//! event, so everything here is testable without a network.
//!
//! Besides each channel's bounds (events, age), a node bounds its replay history in
//! bytes and its number of channel states; `ledger` keeps the node-wide order both
//! limits evict in.

mod broadcast;
mod channel;
mod ledger;
mod outbox;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::event::{encode_event, encode_id_only, Cursor, Origin, Publish, KEEP_ALIVE};
use crate::metrics::Metrics;
use broadcast::BroadcastIds;
use channel::{Channel, Fanout, Log, Mode, Subscriber};
pub use channel::{Entry, Sink};
use ledger::Ledger;
use outbox::Outbox;
pub use outbox::{RelayBatch, RelayEvent, Route};

/// The bounds a broker keeps.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub replay_events: usize,
    pub replay_age: Duration,
    pub subscriber_buffer: usize,
    /// Bounds of the queue of accepted events kept for peers that are away.
    pub relay_queue_events: usize,
    pub relay_queue_bytes: usize,
    /// Bytes of replay history across all channels (see [`Entry::cost`]); past it the
    /// node's oldest events are evicted first, whatever their channel.
    pub replay_max_bytes: usize,
    /// Channel states (with subscribers or only history) this node keeps.
    pub max_channels: usize,
    /// Simulation-only fault: apply relayed events even when already seen.
    #[doc(hidden)]
    pub fault_disable_dedup: bool,
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
    /// Woken when the outbox grows.
    outbox_notify: Notify,
    /// Set once the node closes its streams: every subscription ends.
    closing: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Last sequence assigned by this origin. Assigned under the state lock together
    /// with the append and the outbox push, so every channel and every peer sees this
    /// origin's events in sequence order.
    last_seq: u64,
    channels: BTreeMap<Arc<str>, Arc<Channel>>,
    outbox: Outbox,
    /// Replay bytes and eviction order across channels.
    ledger: Ledger,
    /// Wall time (ms) of the last time this node gave up events still inside the
    /// replay window together with their channel state (a channel evicted for
    /// `max_channels`, a relayed event dropped, a channel whose history was evicted
    /// for `replay_max_bytes` and then removed). A channel state created later cannot
    /// vouch for anything before it.
    dropped_ms: u64,
    /// The last publish to every channel that passed channels without subscribers by
    /// (their history does not get it): its ledger stamp and time. A channel that was
    /// dormant before that stamp cannot vouch for its history before that time.
    broadcast_skipped: (u64, u64),
    /// Highest sequence seen from each other origin (relayed or announced as a gap):
    /// a cursor far beyond it was not issued by this cluster.
    remote_seen: HashMap<Origin, u64>,
    /// Publisher ids of this node's publishes to every channel, in the replay window:
    /// a retry is a duplicate without looking into any channel.
    broadcast_ids: BroadcastIds,
    /// When each limit was last logged, so a node at its limit warns once a minute.
    warned_bytes_ms: Option<u64>,
    warned_channels_ms: Option<u64>,
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

/// How far ahead of this node's clock a cursor's time may be (another node's clock
/// may run ahead by this much).
const MAX_CLOCK_AHEAD_MS: u64 = 60 * 60 * 1000;

fn note_remote(state: &mut State, origin: Origin, seq: u64) {
    let seen = state.remote_seen.entry(origin).or_default();
    *seen = (*seen).max(seq);
}

/// The channels with subscribers, for an event to every channel.
fn live_channels(state: &State) -> Vec<Arc<Channel>> {
    let (ledger, channels) = (&state.ledger, &state.channels);
    ledger
        .live()
        .filter_map(|name| channels.get(name).cloned())
        .collect()
}

/// Notes that an event to every channel, accepted now, passes the channels without
/// subscribers (if any) by.
fn pass_by_dormant(state: &mut State, now: u64) {
    if state.ledger.dormant_count() > 0 {
        state.broadcast_skipped = (state.ledger.next_stamp(), now);
    }
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
    pub fn new(
        origin: Origin,
        clock: Clock,
        settings: BrokerSettings,
        metrics: Arc<Metrics>,
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
                    outbox: Outbox::new(settings.relay_queue_events, settings.relay_queue_bytes),
                    ledger: Ledger::default(),
                    dropped_ms: 0,
                    broadcast_skipped: (0, 0),
                    remote_seen: HashMap::new(),
                    broadcast_ids: BroadcastIds::default(),
                    warned_bytes_ms: None,
                    warned_channels_ms: None,
                }),
                outbox_notify: Notify::new(),
                closing: AtomicBool::new(false),
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

    /// The channel's state, created if absent. A new state has seen everything since
    /// the replay window before now: had an event arrived inside it, the previous
    /// state would still exist, unless this node gave it up early (`dropped_ms`).
    /// At `max_channels`, the dormant channel that has been quiet longest makes room;
    /// if every channel has subscribers, none is made.
    fn channel(
        &self,
        state: &mut State,
        name: &str,
        now_ms: u64,
    ) -> Result<Arc<Channel>, ChannelsFull> {
        if let Some(channel) = state.channels.get(name) {
            return Ok(channel.clone());
        }
        let limit = self.shared.settings.max_channels;
        while state.channels.len() >= limit {
            let Some(victim) = state.ledger.quietest_dormant() else {
                self.shared.metrics.channels_refused.fetch_add(1, Relaxed);
                if warn_due(&mut state.warned_channels_ms, now_ms) {
                    tracing::warn!(
                        limit,
                        "--channels.max reached and every channel has subscribers: new channels are refused"
                    );
                }
                return Err(ChannelsFull { limit });
            };
            let Some(channel) = state.channels.get(&victim).cloned() else {
                state.ledger.forget_name(&victim);
                continue;
            };
            self.remove_channel(state, &channel, &mut channel.log(), now_ms);
            self.shared.metrics.channels_evicted.fetch_add(1, Relaxed);
            if warn_due(&mut state.warned_channels_ms, now_ms) {
                tracing::warn!(
                    limit,
                    "--channels.max reached: evicting the channels without subscribers that were quiet longest"
                );
            }
        }
        let known_from = self
            .replay_cutoff(now_ms)
            .max(self.shared.started_ms)
            .max(state.dropped_ms);
        let name: Arc<str> = Arc::from(name);
        let channel = Arc::new(Channel::new(name.clone(), known_from, &mut state.ledger));
        state.channels.insert(name, channel.clone());
        Ok(channel)
    }

    /// Takes a channel state out of the map and the ledger. If it held an event still
    /// inside the replay window, new channel states stop vouching for the time before now.
    fn remove_channel(&self, state: &mut State, channel: &Channel, log: &mut Log, now_ms: u64) {
        if log.removed {
            return;
        }
        if log.newest_stamp != 0 && log.newest_ms >= self.replay_cutoff(now_ms) {
            state.dropped_ms = state.dropped_ms.max(now_ms);
        }
        log.forget(&mut state.ledger);
        state.channels.remove(&channel.name);
    }

    /// Appends to a channel's log (its state lock held), then evicts the node's oldest
    /// events while the history is over `replay_max_bytes`. The event just appended is
    /// kept, so one event larger than the bound is still delivered.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        state: &mut State,
        log: &mut Log,
        origin: Origin,
        seq: u64,
        now: u64,
        publish: &Publish,
        target: Option<Arc<str>>,
    ) -> Arc<Entry> {
        let settings = &self.shared.settings;
        let entry = log.append(
            origin,
            seq,
            now,
            publish,
            target,
            settings.replay_events,
            &mut state.ledger,
        );
        if state.ledger.counted() > settings.replay_max_bytes {
            self.trim_history(state, log, now);
        }
        entry
    }

    /// Evicts the node's oldest events, whatever their channel, until the history
    /// fits `replay_max_bytes` (or only the newest event is left). `held` is the log
    /// whose lock the caller holds.
    fn trim_history(&self, state: &mut State, held: &mut Log, now: u64) {
        let max = self.shared.settings.replay_max_bytes;
        let (mut events, mut bytes) = (0u64, 0u64);
        while state.ledger.counted() > max {
            let Some((stamp, name)) = state.ledger.oldest() else {
                break;
            };
            if stamp == state.ledger.last_stamp() {
                break;
            }
            let freed = if held.is_named(&name) {
                held.evict_front(&mut state.ledger)
            } else if let Some(channel) = state.channels.get(&name).cloned() {
                let mut log = channel.log();
                let freed = log.evict_front(&mut state.ledger);
                if log.is_idle() {
                    // Its state counts against the bound too: let it go with its history.
                    self.remove_channel(state, &channel, &mut log, now);
                }
                freed
            } else {
                state.ledger.forget_name(&name);
                continue;
            };
            events += 1;
            bytes += freed as u64;
        }
        let metrics = &self.shared.metrics;
        metrics.history_evicted_events.fetch_add(events, Relaxed);
        metrics.history_evicted_bytes.fetch_add(bytes, Relaxed);
        if events > 0 && warn_due(&mut state.warned_bytes_ms, now) {
            tracing::warn!(
                max_bytes = max,
                "--replay.maxBytes reached: evicting the oldest replay history across channels"
            );
        }
    }

    /// Publishes to one channel, or to one client of it when `target` is set. Refused
    /// (and not accepted) when the channel has no state here and none can be made.
    pub fn publish(
        &self,
        channel: &str,
        publish: &Publish,
        target: Option<&str>,
    ) -> Result<Published, ChannelsFull> {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let chan = self.channel(state, channel, now)?;
        let mut log = chan.log();
        log.expire(self.replay_cutoff(now), &mut state.ledger);
        if let Some(cursor) = publish.id.as_ref().and_then(|id| log.publisher_ids.get(id)) {
            self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
            return Ok(Published {
                id: Some(cursor.clone()),
                delivered: 0,
                duplicate: true,
                channels: 1,
            });
        }
        let seq = self.accept(
            state,
            match target {
                None => Route::Channel(channel.to_owned()),
                Some(client) => Route::Client {
                    channel: channel.to_owned(),
                    client: client.to_owned(),
                },
            },
            publish,
        );
        let entry = self.append(
            state,
            &mut log,
            self.shared.origin,
            seq,
            now,
            publish,
            target.map(Arc::from),
        );
        let mut fanout = Fanout::default();
        let delivered = log.deliver(&chan, &entry, &mut fanout);
        drop(log);
        drop(guard);
        // Peers first: their relay streams can be on their way (on another worker
        // thread) while this one writes to the local subscribers.
        self.shared.outbox_notify.notify_waiters();
        self.finish(fanout);
        Ok(Published {
            id: Some(entry.cursor.clone()),
            delivered,
            duplicate: false,
            channels: 1,
        })
    }

    /// Assigns the next sequence and queues the event for peers.
    fn accept(&self, state: &mut State, route: Route, publish: &Publish) -> u64 {
        state.last_seq += 1;
        let seq = state.last_seq;
        let encoded = serde_json::to_vec(&RelayEvent {
            seq,
            route,
            publish: publish.to_raw_json(),
        })
        .unwrap_or_default();
        state
            .outbox
            .push(seq, self.shared.clock.now_ms(), Bytes::from(encoded));
        self.shared.metrics.events_published.fetch_add(1, Relaxed);
        seq
    }

    /// Publishes one event to every channel that has subscribers, here and (through
    /// the relay) on every other node. It has one sequence number, so a cursor covers
    /// it on every channel. Channels kept only for their history do not get it: the
    /// cost of this call follows the channels in use, not every channel ever
    /// published to, and such a channel's history stops vouching for resumes from
    /// before it (they get `reset`).
    pub fn publish_all(&self, publish: &Publish) -> Published {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let cutoff = self.replay_cutoff(now);
        state.broadcast_ids.expire(cutoff);
        let channels = live_channels(state);
        // A retry of an earlier publish to every channel, or an id one of these
        // channels already holds, is a duplicate.
        let duplicate = publish.id.as_ref().is_some_and(|id| {
            state.broadcast_ids.contains(id)
                || channels.iter().any(|c| {
                    let mut log = c.log();
                    log.expire(cutoff, &mut state.ledger);
                    log.publisher_ids.contains_key(id)
                })
        });
        if duplicate {
            self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
            return Published {
                id: None,
                delivered: 0,
                duplicate: true,
                channels: 0,
            };
        }
        if let Some(id) = &publish.id {
            state.broadcast_ids.insert(id.clone(), now);
        }
        let seq = self.accept(state, Route::All, publish);
        pass_by_dormant(state, now);
        let mut fanout = Fanout::default();
        let delivered = self.append_everywhere(
            state,
            &channels,
            self.shared.origin,
            seq,
            now,
            publish,
            None,
            &mut fanout,
        );
        drop(guard);
        self.shared.outbox_notify.notify_waiters();
        self.finish(fanout);
        Published {
            id: None,
            delivered,
            duplicate: false,
            channels: channels.len(),
        }
    }

    /// Appends one event to each of `channels` that does not have it yet (by the
    /// channel's frontier for `origin`); returns the local subscribers it is for, and
    /// leaves the wakes and writes that deliver it in `fanout`.
    #[allow(clippy::too_many_arguments)]
    fn append_everywhere(
        &self,
        state: &mut State,
        channels: &[Arc<Channel>],
        origin: Origin,
        seq: u64,
        now: u64,
        publish: &Publish,
        target: Option<Arc<str>>,
        fanout: &mut Fanout,
    ) -> usize {
        let mut delivered = 0;
        for channel in channels {
            let mut log = channel.log();
            if log.removed {
                // Not expected (channels come from the map under the state lock), but
                // a log out of the map must not re-enter the ledger.
                continue;
            }
            log.expire(self.replay_cutoff(now), &mut state.ledger);
            if log.frontier.get(origin) >= seq && !self.shared.settings.fault_disable_dedup {
                continue;
            }
            let entry = self.append(state, &mut log, origin, seq, now, publish, target.clone());
            delivered += log.deliver(channel, &entry, fanout);
        }
        delivered
    }

    /// Delivers an event another node accepted. Events must arrive in the origin's
    /// sequence order; one this node already has is dropped. Returns local deliveries.
    pub fn apply_remote(
        &self,
        origin: Origin,
        seq: u64,
        route: &Route,
        publish: &Publish,
    ) -> usize {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        note_remote(state, origin, seq);
        let (name, target) = match route {
            Route::All => (None, None),
            Route::Channel(name) => (Some(name), None),
            Route::Client { channel, client } => {
                (Some(channel), Some(Arc::<str>::from(client.as_str())))
            }
        };
        let channels = match name {
            None => {
                pass_by_dormant(state, now);
                live_channels(state)
            }
            Some(name) => match self.channel(state, name, now) {
                Ok(channel) => vec![channel],
                Err(ChannelsFull { .. }) => {
                    // No local subscriber can miss it (the channel has no state
                    // here), but resumes here must not trust the time before now.
                    state.dropped_ms = state.dropped_ms.max(now);
                    return 0;
                }
            },
        };
        let mut fanout = Fanout::default();
        let delivered = self.append_everywhere(
            state,
            &channels,
            origin,
            seq,
            now,
            publish,
            target,
            &mut fanout,
        );
        drop(guard);
        self.finish(fanout);
        delivered
    }

    /// Records that this node will never get `origin`'s events up to `upto`: every
    /// channel gets an `event: gap`, and its cursor moves past the hole so resumes
    /// do not wait for events that are gone.
    pub fn remote_gap(&self, origin: Origin, upto: u64) {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        note_remote(state, origin, upto);
        let channels: Vec<Arc<Channel>> = state.channels.values().cloned().collect();
        let mut fanout = Fanout::default();
        let gap = Publish {
            id: None,
            event: Some("gap".into()),
            data: format!(
                r#"{{"reason":"events from another node were lost before reaching this one","origin":"{origin:x}","upto":{upto}}}"#
            ),
            retry: None,
        };
        for channel in &channels {
            let mut log = channel.log();
            if log.removed || log.frontier.get(origin) >= upto {
                continue;
            }
            log.floor.advance(origin, upto);
            let entry = self.append(state, &mut log, origin, upto, now, &gap, None);
            log.deliver(channel, &entry, &mut fanout);
        }
        drop(guard);
        self.shared.metrics.relay_gaps.fetch_add(1, Relaxed);
        self.finish(fanout);
    }

    /// This origin's accepted events from sequence `from` on, for a peer.
    pub fn relay_read(&self, from: u64, max: usize) -> RelayBatch {
        self.state().outbox.read(from, max)
    }

    /// The first sequence of this origin accepted at or after `since_ms`.
    pub fn relay_first_since(&self, since_ms: u64) -> u64 {
        self.state().outbox.first_since(since_ms)
    }

    /// The last sequence this node's origin assigned (0: none yet).
    pub fn accepted_seq(&self) -> u64 {
        self.state().last_seq
    }

    /// This node's wall time (ms), as cursors carry it.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Wall time (ms) at which this broker started.
    pub fn started_ms(&self) -> u64 {
        self.shared.started_ms
    }

    /// Waits until the outbox holds an event at or after `from`.
    pub async fn relay_wait(&self, from: u64) {
        loop {
            let mut notified = pin!(self.shared.outbox_notify.notified());
            notified.as_mut().enable();
            if self.state().last_seq >= from {
                return;
            }
            notified.await;
        }
    }

    /// (events, bytes) waiting in the outbox.
    pub fn outbox_size(&self) -> (usize, usize) {
        let state = self.state();
        (state.outbox.len(), state.outbox.bytes())
    }

    /// Whether relayed duplicates are applied anyway (simulation-only fault).
    pub fn dedup_disabled(&self) -> bool {
        self.shared.settings.fault_disable_dedup
    }

    /// Whether `client` is subscribed to `channel` on this node.
    pub fn has_client(&self, channel: &str, client: &str) -> bool {
        let state = self.state();
        state
            .channels
            .get(channel)
            .is_some_and(|c| c.log().has_client(client))
    }

    /// Opens a subscription. With `resume`, the events after that cursor still in the
    /// history come first; if the history cannot prove it holds all of them, the
    /// subscription starts with a reset.
    pub fn subscribe(
        &self,
        channel: &str,
        client: Option<&str>,
        resume: Resume<'_>,
    ) -> Result<Subscription, SubscribeError> {
        let now = self.shared.clock.now_ms();
        let id = self.shared.next_subscriber.fetch_add(1, Relaxed);
        let mut guard = self.state();
        let state = &mut *guard;
        let channel = self
            .channel(state, channel, now)
            .map_err(SubscribeError::ChannelsFull)?;
        let mut log = channel.log();
        let client: Arc<str> = match client {
            Some(name) if log.has_client(name) => {
                if log.is_idle() {
                    self.remove_channel(state, &channel, &mut log, now);
                }
                return Err(SubscribeError::ClientTaken);
            }
            Some(name) => Arc::from(name),
            None => self.assigned_client_id(&log, id),
        };
        log.expire(self.replay_cutoff(now), &mut state.ledger);
        if log.subscribers.is_empty() && state.broadcast_skipped.0 > log.dormant_since {
            // A publish to every channel passed this one by while it had no subscriber.
            log.known_from_ms = log.known_from_ms.max(state.broadcast_skipped.1);
        }
        let mut preamble = BytesMut::new();
        let resume = match resume {
            Resume::From(cursor) if !self.could_have_issued(state, cursor, now) => {
                self.shared.metrics.forged_cursors.fetch_add(1, Relaxed);
                Resume::Unknown
            }
            resume => resume,
        };
        let reset = match resume {
            Resume::Live => false,
            Resume::Unknown => true,
            Resume::From(cursor) => !log.can_resume(cursor),
        };
        if reset {
            self.shared.metrics.resets_sent.fetch_add(1, Relaxed);
            preamble.extend_from_slice(&encode_event(
                None,
                Some("reset"),
                None,
                r#"{"reason":"events after your Last-Event-ID may be missing; reload state"}"#,
            ));
        }
        if let Resume::From(cursor) = resume {
            self.shared.metrics.replays_served.fetch_add(1, Relaxed);
            let mut replayed = 0;
            for entry in log.entries.iter() {
                if entry.seq > cursor.frontier.get(entry.origin) && entry.is_for(&client) {
                    preamble.extend_from_slice(&entry.frame);
                    replayed += 1;
                }
            }
            self.shared
                .metrics
                .replayed_events
                .fetch_add(replayed, Relaxed);
        }
        // Leave the client holding the frontier it now has, even if nothing was sent:
        // a reconnect then resumes from here rather than from nothing. A client that
        // saw more through another node keeps that too (see `Subscriber::seen`).
        let mut frontier = Cursor {
            time_ms: now,
            frontier: log.frontier.clone(),
        };
        let mut seen = None;
        if let Resume::From(cursor) = resume {
            if !log.frontier.covers(&cursor.frontier) {
                for (origin, seq) in cursor.frontier.iter() {
                    frontier.frontier.advance(origin, seq);
                }
                seen = Some(Box::new(cursor.frontier.clone()));
            }
        }
        preamble.extend_from_slice(&encode_id_only(&frontier.encode()));
        let next = log.head();
        let mut subscriber = Subscriber::new(client.clone(), next, now);
        subscriber.seen = seen;
        log.add_subscriber(id, subscriber, &mut state.ledger);
        drop(log);
        drop(guard);
        self.shared.metrics.subscribers.fetch_add(1, Relaxed);
        Ok(Subscription {
            broker: self.clone(),
            channel,
            id,
            client,
            preamble: Some(preamble.freeze()),
        })
    }

    /// A client id for subscription `id`: the origin and a keyed hash of the id, so
    /// nobody can take it ahead with a chosen id. Should a chosen id on this channel
    /// equal it all the same, the next candidate is taken: an assigned id is never
    /// one another connection holds.
    fn assigned_client_id(&self, log: &Log, id: u64) -> Arc<str> {
        (0u64..)
            .map(|attempt| self.client_id_candidate(id, attempt))
            .find(|candidate| !log.has_client(candidate))
            .map(Arc::from)
            .unwrap_or_else(|| unreachable!("the candidates are endless"))
    }

    fn client_id_candidate(&self, id: u64, attempt: u64) -> String {
        let hash = self.shared.client_id_key.hash_one((id, attempt));
        format!("{:x}-{hash:016x}", self.shared.origin)
    }

    /// Whether this cluster could have issued `cursor`: not from further ahead of this
    /// node's clock than clocks drift, no sequence of this node's origin it has not
    /// assigned, none of another origin further past what this node saw of it than a
    /// peer's relay queue holds. A cursor that fails is answered with `reset` rather
    /// than taken as seen (which would drop every later event of that origin).
    fn could_have_issued(&self, state: &State, cursor: &Cursor, now: u64) -> bool {
        let slack = self.shared.settings.relay_queue_events as u64;
        cursor.time_ms <= now.saturating_add(MAX_CLOCK_AHEAD_MS)
            && cursor.frontier.iter().all(|(origin, seq)| {
                if origin == self.shared.origin {
                    seq <= state.last_seq
                } else {
                    let seen = state.remote_seen.get(&origin).copied().unwrap_or(0);
                    seq <= seen.saturating_add(slack)
                }
            })
    }

    fn unsubscribe(&self, channel: &Arc<Channel>, id: u64) {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let mut log = channel.log();
        log.remove_subscriber(id, &mut state.ledger);
        if log.is_idle() {
            self.remove_channel(state, channel, &mut log, now);
        }
        self.shared.metrics.subscribers.fetch_sub(1, Relaxed);
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

    /// Sends a keep-alive comment to every subscriber that has been sent nothing for
    /// `interval`. Run every fraction of the interval (one timer for the node rather
    /// than one per stream); returns how many comments are due.
    pub fn keep_alive(&self, interval: Duration) -> usize {
        let silent_since = self
            .shared
            .clock
            .now_ms()
            .saturating_sub(interval.as_millis() as u64);
        let mut due = 0;
        self.for_each_log(|log, fanout| due += log.keep_alive(silent_since, fanout));
        due
    }

    /// Ends every subscription, now and from now on (the node is shutting down).
    pub fn close_streams(&self) {
        self.shared.closing.store(true, Relaxed);
        self.for_each_log(Log::wake_all);
    }

    /// Runs `f` on the log of every channel with subscribers in turn (not under the
    /// node-wide lock), then does the wakes and writes it left.
    fn for_each_log(&self, mut f: impl FnMut(&mut Log, &mut Fanout)) {
        let channels = live_channels(&self.state());
        let mut fanout = Fanout::default();
        for channel in &channels {
            f(&mut channel.log(), &mut fanout);
        }
        self.finish(fanout);
    }

    /// Drops history past the replay age and channels left with nothing. Run
    /// periodically; returns how many channel states were removed. Walks the node's
    /// events oldest first and stops at the first one inside the window, so its cost
    /// follows what expires, not the number of channels.
    pub fn expire(&self) -> usize {
        let now = self.shared.clock.now_ms();
        let cutoff = self.replay_cutoff(now);
        let mut guard = self.state();
        let state = &mut *guard;
        let mut removed = 0;
        while let Some((_, name)) = state.ledger.oldest() {
            let Some(channel) = state.channels.get(&name).cloned() else {
                state.ledger.forget_name(&name);
                continue;
            };
            let mut log = channel.log();
            if log.entries.front().is_none_or(|e| e.arrived_ms >= cutoff) {
                break;
            }
            log.expire(cutoff, &mut state.ledger);
            if log.is_idle() {
                self.remove_channel(state, &channel, &mut log, now);
                removed += 1;
            }
        }
        // Channel states that never held an event and have no subscriber (a subscribe
        // refused after the state was made): first among the dormant.
        while let Some(name) = state.ledger.never_used_dormant() {
            let Some(channel) = state.channels.get(&name).cloned() else {
                state.ledger.forget_name(&name);
                continue;
            };
            self.remove_channel(state, &channel, &mut channel.log(), now);
            removed += 1;
        }
        removed
    }

    /// Channels with subscribers and their client ids, for `/status`.
    pub fn channels(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.state();
        let (ledger, channels) = (&state.ledger, &state.channels);
        ledger
            .live()
            .filter_map(|name| {
                let log = channels.get(name)?.log();
                let clients = log.subscribers.values().map(|s| s.client.to_string());
                Some((name.to_string(), clients.collect()))
            })
            .collect()
    }

    /// Counts kept as they change: reading them costs the same at any number of
    /// channels (`/metrics` is open to anyone).
    pub fn stats(&self) -> BrokerStats {
        let state = self.state();
        BrokerStats {
            channels: state.ledger.live_count(),
            dormant_channels: state.ledger.dormant_count(),
            history_events: state.ledger.events,
            history_bytes: state.ledger.bytes,
            channel_state_bytes: state.ledger.state_bytes,
            subscribers: self.shared.metrics.subscribers.load(Relaxed) as usize,
        }
    }
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// Bytes to write: one frame, or several coalesced into one buffer.
    Data(Bytes),
    /// The subscriber fell further behind than its buffer; end the stream.
    Overflow { behind: u64 },
    /// The node is closing its streams.
    Closed,
}

/// One subscriber's place in a channel. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    broker: Broker,
    channel: Arc<Channel>,
    id: u64,
    client: Arc<str>,
    preamble: Option<Bytes>,
}

/// Most bytes coalesced into one write for a subscriber that has several frames waiting.
const MAX_BATCH_BYTES: usize = 64 * 1024;

impl Subscription {
    pub fn client_id(&self) -> &str {
        &self.client
    }

    pub fn channel(&self) -> &str {
        &self.channel.name
    }

    /// The first bytes of the stream: reset signal, replayed events and the cursor.
    pub fn take_preamble(&mut self) -> Option<Bytes> {
        self.preamble.take()
    }

    /// Lets appends write this subscriber's events to `sink` themselves while its
    /// task waits with nothing to write. The task must then write only what
    /// [`Subscription::poll_next`] and [`Subscription::poll_release`] give it.
    pub fn attach(&mut self, sink: Arc<dyn Sink>) {
        if let Some(me) = self.channel.log().subscribers.get_mut(&self.id) {
            me.sink = Some(sink);
        }
    }

    /// Waits for the next events for this subscriber.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next bytes for this subscriber, or `Pending` with its waker left with the
    /// channel: the append that has an event for it wakes it, or writes the event to
    /// its sink instead (see [`Subscription::attach`]).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let shared = &self.broker.shared;
        let buffer = shared.settings.subscriber_buffer as u64;
        let mut guard = self.channel.log();
        let log = &mut *guard;
        let head = log.head();
        let Some(me) = log.subscribers.get_mut(&self.id) else {
            return Poll::Ready(Next::Closed);
        };
        if me.being_written(cx) {
            // The append wakes or parks us when done.
            return Poll::Pending;
        }
        me.mode = Mode::Running;
        if let Some(carry) = me.carry.take() {
            return Poll::Ready(Next::Data(carry));
        }
        if shared.closing.load(Relaxed) {
            return Poll::Ready(Next::Closed);
        }
        if me.next < log.base || head - me.next > buffer {
            shared
                .metrics
                .slow_subscriber_disconnects
                .fetch_add(1, Relaxed);
            return Poll::Ready(Next::Overflow {
                behind: head - me.next,
            });
        }
        let start = (me.next - log.base) as usize;
        let mut single: Option<Bytes> = None;
        let mut batch: Option<BytesMut> = None;
        let mut count = 0;
        for entry in log.entries.range(start..) {
            me.next += 1;
            if !me.wants(entry) {
                continue;
            }
            count += 1;
            let frame = match &me.seen {
                None => entry.frame.clone(),
                Some(seen) => entry.frame_covering(seen),
            };
            match (&mut single, &mut batch) {
                (None, None) => single = Some(frame),
                (Some(first), None) => {
                    let mut buf = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 8));
                    buf.extend_from_slice(first);
                    buf.extend_from_slice(&frame);
                    batch = Some(buf);
                }
                (_, Some(buf)) => buf.extend_from_slice(&frame),
            }
            if batch.as_ref().is_some_and(|b| b.len() >= MAX_BATCH_BYTES) {
                break;
            }
        }
        if me.next == head && me.seen.as_ref().is_some_and(|s| log.frontier.covers(s)) {
            // This node has caught up with what the subscriber had seen elsewhere,
            // and it has looked at every event up to here.
            me.seen = None;
        }
        if count > 0 {
            me.keep_alive_due = false;
            me.last_sent_ms = shared.clock.now_ms();
            shared.metrics.events_delivered.fetch_add(count, Relaxed);
            return Poll::Ready(Next::Data(match batch {
                Some(buf) => buf.freeze(),
                None => single.unwrap_or_default(),
            }));
        }
        if std::mem::take(&mut me.keep_alive_due) {
            me.last_sent_ms = shared.clock.now_ms();
            return Poll::Ready(Next::Data(Bytes::from_static(KEEP_ALIVE)));
        }
        me.mode = Mode::Parked(cx.waker().clone());
        Poll::Pending
    }

    /// Takes this subscriber's socket back from appends for good (to end the stream
    /// with bytes of the task's own): `Pending` while an append is writing to it, then
    /// the part of a frame the task must write first, if any.
    pub fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut log = self.channel.log();
        let Some(me) = log.subscribers.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if me.being_written(cx) {
            return Poll::Pending;
        }
        me.mode = Mode::Running;
        me.sink = None;
        Poll::Ready(me.carry.take())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.channel, self.id);
    }
}

#[cfg(test)]
mod tests;
