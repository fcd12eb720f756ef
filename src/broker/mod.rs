//! The broker: channels, subscribers, replay history and channel lifecycle on one
//! node. Pure state and no sockets; the only async piece is waiting for the next
//! event, so everything here is testable without a network.

mod channel;
mod outbox;

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::event::{encode_event, encode_id_only, Cursor, Origin, Publish};
use crate::metrics::Metrics;
pub use channel::Entry;
use channel::{Channel, Subscriber};
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
    state: Mutex<State>,
    /// Woken when the outbox grows.
    outbox_notify: Notify,
}

#[derive(Debug)]
struct State {
    /// Last sequence assigned by this origin. Assigned under the state lock together
    /// with the append and the outbox push, so every channel and every peer sees this
    /// origin's events in sequence order.
    last_seq: u64,
    channels: BTreeMap<Arc<str>, Arc<Channel>>,
    outbox: Outbox,
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
                state: Mutex::new(State {
                    last_seq: 0,
                    channels: BTreeMap::new(),
                    outbox: Outbox::new(settings.relay_queue_events, settings.relay_queue_bytes),
                }),
                outbox_notify: Notify::new(),
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
    /// state would still exist.
    fn channel(&self, state: &mut State, name: &str, now_ms: u64) -> Arc<Channel> {
        if let Some(channel) = state.channels.get(name) {
            return channel.clone();
        }
        let known_from = self.replay_cutoff(now_ms).max(self.shared.started_ms);
        let name: Arc<str> = Arc::from(name);
        let channel = Arc::new(Channel::new(name.clone(), known_from));
        state.channels.insert(name, channel.clone());
        channel
    }

    /// Publishes to one channel, or to one client of it when `target` is set.
    pub fn publish(&self, channel: &str, publish: &Publish, target: Option<&str>) -> Published {
        let now = self.shared.clock.now_ms();
        let mut state = self.state();
        let chan = self.channel(&mut state, channel, now);
        let mut log = chan.log();
        log.expire(self.replay_cutoff(now));
        if let Some(cursor) = publish.id.as_ref().and_then(|id| log.publisher_ids.get(id)) {
            self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
            return Published {
                id: Some(cursor.clone()),
                delivered: 0,
                duplicate: true,
                channels: 1,
            };
        }
        let seq = self.accept(
            &mut state,
            match target {
                None => Route::Channel(channel.to_owned()),
                Some(client) => Route::Client {
                    channel: channel.to_owned(),
                    client: client.to_owned(),
                },
            },
            publish,
        );
        let entry = log.append(
            self.shared.origin,
            seq,
            now,
            publish,
            target.map(Arc::from),
            self.shared.settings.replay_events,
        );
        let mut wakers = Vec::new();
        let delivered = log.wake_for(&entry, &mut wakers);
        drop(log);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        self.shared.outbox_notify.notify_waiters();
        Published {
            id: Some(entry.cursor.clone()),
            delivered,
            duplicate: false,
            channels: 1,
        }
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

    /// Publishes one event to every channel, here and (through the relay) on every
    /// other node. It has one sequence number, so a cursor covers it on every channel.
    pub fn publish_all(&self, publish: &Publish) -> Published {
        let now = self.shared.clock.now_ms();
        let mut state = self.state();
        let channels: Vec<Arc<Channel>> = state.channels.values().cloned().collect();
        let duplicate = publish.id.as_ref().is_some_and(|id| {
            channels.iter().any(|c| {
                let mut log = c.log();
                log.expire(self.replay_cutoff(now));
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
        let seq = self.accept(&mut state, Route::All, publish);
        let mut wakers = Vec::new();
        let delivered = self.append_everywhere(
            &channels,
            self.shared.origin,
            seq,
            now,
            publish,
            None,
            &mut wakers,
        );
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        self.shared.outbox_notify.notify_waiters();
        Published {
            id: None,
            delivered,
            duplicate: false,
            channels: channels.len(),
        }
    }

    /// Appends one event to each of `channels` that does not have it yet (by the
    /// channel's frontier for `origin`); returns the local subscribers it is for, and
    /// adds the wakers of those waiting to `wakers`.
    #[allow(clippy::too_many_arguments)]
    fn append_everywhere(
        &self,
        channels: &[Arc<Channel>],
        origin: Origin,
        seq: u64,
        now: u64,
        publish: &Publish,
        target: Option<Arc<str>>,
        wakers: &mut Vec<Waker>,
    ) -> usize {
        let mut delivered = 0;
        for channel in channels {
            let mut log = channel.log();
            log.expire(self.replay_cutoff(now));
            if log.frontier.get(origin) >= seq && !self.shared.settings.fault_disable_dedup {
                continue;
            }
            let entry = log.append(
                origin,
                seq,
                now,
                publish,
                target.clone(),
                self.shared.settings.replay_events,
            );
            delivered += log.wake_for(&entry, wakers);
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
        let mut state = self.state();
        let (channels, target) = match route {
            Route::All => (state.channels.values().cloned().collect::<Vec<_>>(), None),
            Route::Channel(name) => (vec![self.channel(&mut state, name, now)], None),
            Route::Client { channel, client } => (
                vec![self.channel(&mut state, channel, now)],
                Some(Arc::<str>::from(client.as_str())),
            ),
        };
        let mut wakers = Vec::new();
        let delivered =
            self.append_everywhere(&channels, origin, seq, now, publish, target, &mut wakers);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        delivered
    }

    /// Records that this node will never get `origin`'s events up to `upto`: every
    /// channel gets an `event: gap`, and its cursor moves past the hole so resumes
    /// do not wait for events that are gone.
    pub fn remote_gap(&self, origin: Origin, upto: u64) {
        let now = self.shared.clock.now_ms();
        let state = self.state();
        let channels: Vec<Arc<Channel>> = state.channels.values().cloned().collect();
        let mut wakers = Vec::new();
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
            if log.frontier.get(origin) >= upto {
                continue;
            }
            log.floor.advance(origin, upto);
            let entry = log.append(
                origin,
                upto,
                now,
                &gap,
                None,
                self.shared.settings.replay_events,
            );
            log.wake_for(&entry, &mut wakers);
        }
        drop(state);
        self.shared.metrics.relay_gaps.fetch_add(1, Relaxed);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// This origin's accepted events from sequence `from` on, for a peer.
    pub fn relay_read(&self, from: u64, max: usize) -> RelayBatch {
        self.state().outbox.read(from, max)
    }

    /// The first sequence of this origin accepted at or after `since_ms`.
    pub fn relay_first_since(&self, since_ms: u64) -> u64 {
        self.state().outbox.first_since(since_ms)
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
        let mut state = self.state();
        let channel = self.channel(&mut state, channel, now);
        let mut log = channel.log();
        let client: Arc<str> = match client {
            Some(name) if log.has_client(name) => {
                let idle = log.is_idle();
                drop(log);
                if idle {
                    state.channels.remove(&channel.name);
                }
                return Err(SubscribeError::ClientTaken);
            }
            Some(name) => Arc::from(name),
            None => Arc::from(format!("{:x}-{id}", self.shared.origin)),
        };
        log.expire(self.replay_cutoff(now));
        let mut preamble = BytesMut::new();
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
        // a reconnect then resumes from here rather than from nothing.
        let frontier = Cursor {
            time_ms: now,
            frontier: log.frontier.clone(),
        };
        preamble.extend_from_slice(&encode_id_only(&frontier.encode()));
        log.subscribers.insert(
            id,
            Subscriber {
                client: client.clone(),
                waker: None,
            },
        );
        let next = log.head();
        drop(log);
        drop(state);
        self.shared.metrics.subscribers.fetch_add(1, Relaxed);
        Ok(Subscription {
            broker: self.clone(),
            channel,
            id,
            client,
            next,
            preamble: Some(preamble.freeze()),
        })
    }

    fn unsubscribe(&self, channel: &Arc<Channel>, id: u64) {
        let mut state = self.state();
        let mut log = channel.log();
        log.subscribers.remove(&id);
        if log.is_idle() && !log.removed {
            log.removed = true;
            state.channels.remove(&channel.name);
        }
        self.shared.metrics.subscribers.fetch_sub(1, Relaxed);
    }

    /// Drops history past the replay age and channels left with nothing. Run
    /// periodically; returns how many channel states were removed.
    pub fn expire(&self) -> usize {
        let cutoff = self.replay_cutoff(self.shared.clock.now_ms());
        let mut state = self.state();
        let before = state.channels.len();
        state.channels.retain(|_, channel| {
            let mut log = channel.log();
            log.expire(cutoff);
            if log.is_idle() {
                log.removed = true;
                false
            } else {
                true
            }
        });
        before - state.channels.len()
    }

    /// Channels with subscribers and their client ids, for `/status`.
    pub fn channels(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.state();
        state
            .channels
            .iter()
            .filter_map(|(name, channel)| {
                let log = channel.log();
                (!log.subscribers.is_empty()).then(|| {
                    let clients = log.subscribers.values().map(|s| s.client.to_string());
                    let clients = clients.collect();
                    (name.to_string(), clients)
                })
            })
            .collect()
    }

    pub fn stats(&self) -> BrokerStats {
        let state = self.state();
        let mut stats = BrokerStats::default();
        for channel in state.channels.values() {
            let log = channel.log();
            if log.subscribers.is_empty() {
                stats.dormant_channels += 1;
            } else {
                stats.channels += 1;
            }
            stats.subscribers += log.subscribers.len();
            stats.history_events += log.entries.len();
        }
        stats
    }
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// Bytes to write: one frame, or several coalesced into one buffer.
    Data(Bytes),
    /// The subscriber fell further behind than its buffer; end the stream.
    Overflow { behind: u64 },
}

/// One subscriber's place in a channel. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    broker: Broker,
    channel: Arc<Channel>,
    id: u64,
    client: Arc<str>,
    next: u64,
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

    /// Waits for the next events for this subscriber.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next events for this subscriber, or `Pending` with its waker left with the
    /// channel: the append that has an event for it wakes it (and no other append).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let metrics = &self.broker.shared.metrics;
        let buffer = self.broker.shared.settings.subscriber_buffer as u64;
        let mut log = self.channel.log();
        let head = log.head();
        if self.next < log.base || head - self.next > buffer {
            metrics.slow_subscriber_disconnects.fetch_add(1, Relaxed);
            return Poll::Ready(Next::Overflow {
                behind: head - self.next,
            });
        }
        let start = (self.next - log.base) as usize;
        let mut single: Option<Bytes> = None;
        let mut batch: Option<BytesMut> = None;
        let mut count = 0;
        for entry in log.entries.range(start..) {
            self.next += 1;
            if !entry.is_for(&self.client) {
                continue;
            }
            count += 1;
            match (&mut single, &mut batch) {
                (None, None) => single = Some(entry.frame.clone()),
                (Some(first), None) => {
                    let mut buf = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 8));
                    buf.extend_from_slice(first);
                    buf.extend_from_slice(&entry.frame);
                    batch = Some(buf);
                }
                (_, Some(buf)) => buf.extend_from_slice(&entry.frame),
            }
            if batch.as_ref().is_some_and(|b| b.len() >= MAX_BATCH_BYTES) {
                break;
            }
        }
        if count > 0 {
            metrics.events_delivered.fetch_add(count, Relaxed);
            return Poll::Ready(Next::Data(match batch {
                Some(buf) => buf.freeze(),
                None => single.unwrap_or_default(),
            }));
        }
        if let Some(me) = log.subscribers.get_mut(&self.id) {
            if !me.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                me.waker = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.channel, self.id);
    }
}

#[cfg(test)]
mod tests;
