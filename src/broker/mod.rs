//! The broker: channels, subscribers, replay history and channel lifecycle on one
//! node. Pure state and no sockets; the only async piece is waiting for the next
//! event, so everything here is testable without a network.

mod channel;

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::clock::Clock;
use crate::event::{encode_event, encode_id_only, Cursor, Origin, Publish};
use crate::metrics::Metrics;
use channel::Channel;
pub use channel::Entry;

/// The bounds a broker keeps.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub replay_events: usize,
    pub replay_age: Duration,
    pub subscriber_buffer: usize,
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
}

#[derive(Debug, Default)]
struct State {
    /// Last sequence assigned by this origin. Assigned under the state lock together
    /// with the append, so every channel sees this origin's events in sequence order.
    last_seq: u64,
    channels: BTreeMap<Arc<str>, Arc<Channel>>,
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
                settings,
                metrics,
                next_subscriber: AtomicU64::new(1),
                state: Mutex::new(State::default()),
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
        let channel = self.channel(&mut state, channel, now);
        let mut log = channel.log();
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
        state.last_seq += 1;
        let entry = log.append(
            self.shared.origin,
            state.last_seq,
            now,
            publish,
            target.map(Arc::from),
            self.shared.settings.replay_events,
        );
        let delivered = log.subscribers.values().filter(|c| entry.is_for(c)).count();
        drop(log);
        drop(state);
        channel.notify.notify_waiters();
        self.shared.metrics.events_published.fetch_add(1, Relaxed);
        Published {
            id: Some(entry.cursor.clone()),
            delivered,
            duplicate: false,
            channels: 1,
        }
    }

    /// Publishes one event to every channel this node holds. It has one sequence
    /// number, so a cursor covers it on every channel at once.
    pub fn publish_all(&self, publish: &Publish) -> Published {
        let now = self.shared.clock.now_ms();
        let mut state = self.state();
        let channels: Vec<Arc<Channel>> = state.channels.values().cloned().collect();
        let mut outcome = Published {
            id: None,
            delivered: 0,
            duplicate: false,
            channels: 0,
        };
        let seq = state.last_seq + 1;
        let mut notify = Vec::with_capacity(channels.len());
        for channel in channels {
            let mut log = channel.log();
            log.expire(self.replay_cutoff(now));
            if publish
                .id
                .as_ref()
                .is_some_and(|id| log.publisher_ids.contains_key(id))
            {
                continue;
            }
            let entry = log.append(
                self.shared.origin,
                seq,
                now,
                publish,
                None,
                self.shared.settings.replay_events,
            );
            drop(entry);
            outcome.delivered += log.subscribers.len();
            outcome.channels += 1;
            drop(log);
            notify.push(channel);
        }
        if outcome.channels > 0 {
            state.last_seq = seq;
            self.shared.metrics.events_published.fetch_add(1, Relaxed);
        } else if publish.id.is_some() && !state.channels.is_empty() {
            outcome.duplicate = true;
            self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
        }
        drop(state);
        for channel in notify {
            channel.notify.notify_waiters();
        }
        outcome
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
        log.subscribers.insert(id, client.clone());
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
                    let clients = log.subscribers.values().map(|c| c.to_string()).collect();
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
        let metrics = &self.broker.shared.metrics;
        let buffer = self.broker.shared.settings.subscriber_buffer as u64;
        loop {
            let mut notified = pin!(self.channel.notify.notified());
            notified.as_mut().enable();
            {
                let log = self.channel.log();
                let head = log.head();
                if self.next < log.base || head - self.next > buffer {
                    metrics.slow_subscriber_disconnects.fetch_add(1, Relaxed);
                    return Next::Overflow {
                        behind: head - self.next,
                    };
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
                            let mut buf =
                                BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 8));
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
                    return Next::Data(match batch {
                        Some(buf) => buf.freeze(),
                        None => single.unwrap_or_default(),
                    });
                }
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.channel, self.id);
    }
}

#[cfg(test)]
mod tests;
