//! Channel patterns (`GET /channel/orders.*`): a stream part that follows every
//! channel whose name starts with a prefix ending in `.` or `:`.
//!
//! A pattern is not a channel: subscribing to one makes no channel state and keeps
//! none alive. Each pattern with subscribers on this node has a [`Feed`], indexed
//! by its prefix: every append to a channel's log (a publish, a relayed event, a
//! gap) looks up the prefixes of the channel's name at each `.` and `:` in that
//! index (a few map lookups, whatever the number of patterns) and queues the entry
//! in each feed found, under the node's lock, so a feed holds the node's events in
//! the node's order.
//!
//! A pattern part's cursor is one [`Cursor`] across all its channels: the highest
//! sequence per origin it delivered. A node receives each origin's events in
//! sequence order, whatever their channel, so an event of the pattern is delivered
//! exactly when its sequence is above the cursor's for its origin (see
//! `MultiSubscription::frame_pattern`). Channels first seen through the pattern need
//! no record of their own: a resume on any node merges the history of every
//! matching channel it holds in its arrival order and replays what is above the
//! cursor. The same rule skips, after a resume on a node behind the one that issued
//! the cursor, the events the client already had, and delivers an event sent to
//! every channel once rather than once per matching channel.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::event::{encode_event, Cursor};

use super::channel::{Arrival, Entry};
use super::fanout::Fanout;
use super::stream::Polled;
use super::{Broker, Resume, State, SubscribeError};

/// The prefix a pattern matches (`orders.` for `orders.*`), if `name` is a pattern:
/// `*` as its last character, right after a `.` or `:`.
pub fn pattern_prefix(name: &str) -> Option<&str> {
    let prefix = name.strip_suffix('*')?;
    prefix.ends_with(['.', ':']).then_some(prefix)
}

/// The prefixes of `channel` a pattern could name: up to each `.` and `:` in it.
fn prefixes(channel: &str) -> impl Iterator<Item = &str> {
    channel
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'.' || *b == b':')
        .map(move |(i, _)| &channel[..=i])
}

/// The events of a pattern's channels on this node, for its subscribers here.
#[derive(Debug)]
pub(crate) struct Feed {
    /// The pattern's prefix (`orders.`).
    pub(crate) prefix: Arc<str>,
    /// The pattern as subscribers name it (`orders.*`).
    pub(crate) pattern: Arc<str>,
    log: Mutex<FeedLog>,
}

#[derive(Debug, Default)]
struct FeedLog {
    /// Entries some reader has yet to look at, with their channel; `entries[0]` is
    /// at position `base`.
    entries: VecDeque<(Arc<str>, Arc<Entry>)>,
    base: u64,
    readers: BTreeMap<u64, Reader>,
}

#[derive(Debug)]
struct Reader {
    client: Arc<str>,
    /// Position of the next entry to look at.
    next: u64,
    /// Set while its task waits for entries.
    waker: Option<Waker>,
    last_sent_ms: u64,
    keep_alive_due: bool,
}

impl Feed {
    fn log(&self) -> MutexGuard<'_, FeedLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FeedLog {
    fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Drops the entries every reader has looked at.
    fn trim(&mut self) {
        let slowest = self.readers.values().map(|r| r.next).min();
        let slowest = slowest.unwrap_or_else(|| self.head());
        while self.base < slowest && self.entries.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// One subscriber of a pattern: a part of a [`super::MultiSubscription`]. Dropping
/// it unsubscribes.
#[derive(Debug)]
pub(crate) struct PatternReader {
    pub(super) broker: Broker,
    feed: Arc<Feed>,
    id: u64,
    pub(crate) client: Arc<str>,
}

/// A pattern part just opened (see [`Broker::open_pattern`]).
pub(crate) struct PatternOpened {
    pub(crate) reader: PatternReader,
    /// The history of the pattern's channels cannot prove it holds every event
    /// after the resume cursor.
    pub(crate) reset: bool,
    /// The matching channels' events after the resume cursor, in this node's order.
    pub(crate) replay: Vec<(Arc<str>, Arc<Entry>)>,
    /// What the client holds once the replay is done.
    pub(crate) cursor: Cursor,
}

impl Broker {
    /// Queues `entry`, just appended to `channel`, in the feed of every pattern that
    /// matches it; the wakes of waiting readers go to `out`.
    pub(super) fn feed_patterns(
        &self,
        state: &State,
        channel: &Arc<str>,
        entry: &Arc<Entry>,
        out: &mut Fanout,
    ) {
        if state.patterns.is_empty() {
            return;
        }
        for prefix in prefixes(channel) {
            if let Some(feed) = state.patterns.get(prefix) {
                self.feed_one(feed, channel, entry, out);
            }
        }
    }

    /// Queues `entry` of `channel` in `feed`; the wakes of its waiting readers go to
    /// `out`.
    fn feed_one(&self, feed: &Feed, channel: &Arc<str>, entry: &Arc<Entry>, out: &mut Fanout) {
        let buffer = self.shared.settings.subscriber_buffer;
        let mut log = feed.log();
        log.entries.push_back((channel.clone(), entry.clone()));
        // Past the buffer, the oldest go: a reader still below them overflows.
        while log.entries.len() > buffer {
            log.entries.pop_front();
            log.base += 1;
        }
        for reader in log.readers.values_mut() {
            if entry.is_for(&reader.client) {
                out.pattern_readers += 1;
                if let Some(waker) = reader.waker.take() {
                    out.wake(waker);
                }
            }
        }
    }

    /// Queues a gap (`arrival`, its publish the gap's body) in every pattern's feed
    /// under the pattern's own name: a pattern follows channels this node may hold
    /// no state for, which the channels' gaps do not reach (seed 4977 of the random
    /// search). A reader whose part a channel's gap already moved past it skips it.
    pub(super) fn feed_gap_to_patterns(
        &self,
        state: &mut State,
        arrival: &Arrival<'_>,
        out: &mut Fanout,
    ) {
        if state.patterns.is_empty() {
            return;
        }
        let entry = pattern_entry(state, arrival);
        for feed in state.patterns.values() {
            self.feed_one(feed, &feed.pattern, &entry, out);
        }
    }

    /// Queues an event of `channel`, which this node has no room to keep (see
    /// `--channels.max`), in the feeds of the patterns that match it: their live
    /// subscribers still get it, though no history keeps it for a resume.
    pub(super) fn feed_without_channel(
        &self,
        state: &mut State,
        channel: &str,
        arrival: &Arrival<'_>,
        out: &mut Fanout,
    ) {
        if !prefixes(channel).any(|prefix| state.patterns.contains_key(prefix)) {
            return;
        }
        let entry = pattern_entry(state, arrival);
        self.feed_patterns(state, &Arc::from(channel), &entry, out);
    }

    /// Opens a subscription to the pattern with prefix `prefix` as `client` (one is
    /// assigned when `None`): the replay of its channels' history after the resume
    /// cursor, merged in this node's order, then every event appended to a channel
    /// it matches.
    pub(super) fn open_pattern(
        &self,
        prefix: &str,
        client: Option<&str>,
        resume: Resume<'_>,
    ) -> Result<PatternOpened, SubscribeError> {
        let now = self.shared.clock.now_ms();
        let id = self.shared.next_subscriber.fetch_add(1, Relaxed);
        let mut guard = self.state();
        let state = &mut *guard;
        let feed = state.patterns.get(prefix).cloned();
        let taken = |name: &str| {
            feed.as_ref()
                .is_some_and(|f| f.log().readers.values().any(|r| &*r.client == name))
        };
        let client: Arc<str> = match client {
            Some(name) if taken(name) => return Err(SubscribeError::ClientTaken),
            Some(name) => Arc::from(name),
            None => (0u64..)
                .map(|attempt| self.client_id_candidate(id, attempt))
                .find(|candidate| !taken(candidate))
                .map(Arc::from)
                .unwrap_or_else(|| unreachable!("the candidates are endless")),
        };
        let resume = match resume {
            Resume::From(cursor) if !self.could_have_issued(state, cursor, now) => {
                self.shared.metrics.forged_cursors.fetch_add(1, Relaxed);
                Resume::Unknown
            }
            resume => resume,
        };
        // A matching channel without state here held no event inside the replay
        // window since this node started or last gave events up (as for a new
        // channel state, see `Broker::channel`).
        let cutoff = self.replay_cutoff(now);
        let known_from = cutoff.max(self.shared.started_ms).max(state.dropped_ms);
        let mut reset = match resume {
            Resume::Live => false,
            Resume::Unknown => true,
            Resume::From(cursor) => cursor.time_ms < known_from,
        };
        let mut cursor = Cursor {
            time_ms: now,
            frontier: Default::default(),
        };
        let mut replay = Vec::new();
        // Channels kept only for history that has just expired: they go, as in
        // `Broker::expire` (nothing else would remove them now they hold no event).
        let mut emptied = Vec::new();
        let matching = state
            .channels
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix));
        for (name, channel) in matching {
            let mut log = channel.log();
            log.expire(cutoff, &mut state.ledger);
            if log.is_idle() {
                emptied.push(channel.clone());
            }
            for (origin, seq) in log.frontier.iter() {
                cursor.frontier.advance(origin, seq);
            }
            let Resume::From(from) = resume else {
                continue;
            };
            reset = reset || !log.can_resume(from);
            replay.extend(
                log.entries
                    .iter()
                    .filter(|e| e.seq > from.frontier.get(e.origin) && e.is_for(&client))
                    .map(|e| (name.clone(), e.clone())),
            );
        }
        for channel in emptied {
            self.remove_channel(state, &channel, &mut channel.log(), now);
        }
        replay.sort_by_key(|(_, entry)| entry.stamp);
        if let Resume::From(from) = resume {
            reset = reset || self.cannot_vouch(state, &from.frontier, &cursor.frontier);
            // A client that saw more through another node keeps that too.
            for (origin, seq) in from.frontier.iter() {
                cursor.frontier.advance(origin, seq);
            }
            self.shared.metrics.replays_served.fetch_add(1, Relaxed);
            let replayed = replay.len() as u64;
            self.shared
                .metrics
                .replayed_events
                .fetch_add(replayed, Relaxed);
        }
        if reset {
            self.shared.metrics.resets_sent.fetch_add(1, Relaxed);
        }
        // As for a channel (`Broker::subscribe`): how far this node is caught up, or
        // the resume's own time if later and vouched for.
        cursor.time_ms = match resume {
            Resume::From(from) if !reset => self.id_time(now).max(from.time_ms.min(now)),
            _ => self.id_time(now),
        };
        let feed = feed.unwrap_or_else(|| {
            let feed = Arc::new(Feed {
                prefix: Arc::from(prefix),
                pattern: Arc::from(format!("{prefix}*")),
                log: Mutex::new(FeedLog::default()),
            });
            state.patterns.insert(feed.prefix.clone(), feed.clone());
            feed
        });
        let mut log = feed.log();
        let next = log.head();
        log.readers.insert(
            id,
            Reader {
                client: client.clone(),
                next,
                waker: None,
                last_sent_ms: now,
                keep_alive_due: false,
            },
        );
        drop(log);
        drop(guard);
        self.shared.metrics.subscribers.fetch_add(1, Relaxed);
        Ok(PatternOpened {
            reader: PatternReader {
                broker: self.clone(),
                feed,
                id,
                client,
            },
            reset,
            replay,
            cursor,
        })
    }

    fn unsubscribe_pattern(&self, feed: &Arc<Feed>, id: u64) {
        let mut state = self.state();
        let mut log = feed.log();
        log.readers.remove(&id);
        log.trim();
        if log.readers.is_empty()
            && state
                .patterns
                .get(&feed.prefix)
                .is_some_and(|f| Arc::ptr_eq(f, feed))
        {
            state.patterns.remove(&feed.prefix);
        }
        drop(log);
        drop(state);
        self.shared.metrics.subscribers.fetch_sub(1, Relaxed);
    }

    /// Runs `f` on every pattern reader of this node in turn, then does the wakes.
    pub(super) fn for_each_pattern_reader(&self, mut f: impl FnMut(&mut ReaderVisit<'_>)) {
        let feeds: Vec<Arc<Feed>> = self.state().patterns.values().cloned().collect();
        let mut wakers = Vec::new();
        for feed in &feeds {
            let mut log = feed.log();
            for reader in log.readers.values_mut() {
                let mut visit = ReaderVisit {
                    reader,
                    wakers: &mut wakers,
                };
                f(&mut visit);
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether `client` follows a pattern that matches `channel` on this node.
    pub(super) fn pattern_has_client(&self, state: &State, channel: &str, client: &str) -> bool {
        prefixes(channel).any(|prefix| {
            state
                .patterns
                .get(prefix)
                .is_some_and(|feed| feed.log().readers.values().any(|r| &*r.client == client))
        })
    }

    /// Patterns with subscribers and their client ids, for `/status`.
    pub(super) fn pattern_clients(&self, state: &State) -> Vec<(String, Vec<String>)> {
        state
            .patterns
            .values()
            .map(|feed| {
                let log = feed.log();
                let clients = log.readers.values().map(|r| r.client.to_string());
                (feed.pattern.to_string(), clients.collect())
            })
            .collect()
    }
}

/// A pattern reader as the node-wide visits see it (keep-alives, closing).
pub(super) struct ReaderVisit<'a> {
    reader: &'a mut Reader,
    wakers: &'a mut Vec<Waker>,
}

impl ReaderVisit<'_> {
    /// Marks a waiting reader silent since `silent_since_ms` for a keep-alive.
    pub(super) fn keep_alive(&mut self, silent_since_ms: u64) -> bool {
        if self.reader.last_sent_ms > silent_since_ms || self.reader.waker.is_none() {
            return false;
        }
        self.reader.keep_alive_due = true;
        self.wake();
        true
    }

    pub(super) fn wake(&mut self) {
        self.wakers.extend(self.reader.waker.take());
    }
}

impl PatternReader {
    pub(crate) fn pattern(&self) -> &str {
        &self.feed.pattern
    }

    /// The entries for this reader (up to about `max_bytes` of frames), added to
    /// `out` with their channel; like `Subscription::poll_entries`.
    pub(super) fn poll_entries(
        &mut self,
        cx: &mut Context<'_>,
        max_bytes: usize,
        out: &mut Vec<(Arc<str>, Arc<Entry>)>,
    ) -> Poll<Polled> {
        let shared = &self.broker.shared;
        let mut guard = self.feed.log();
        let log = &mut *guard;
        let (base, head) = (log.base, log.head());
        let Some(me) = log.readers.get_mut(&self.id) else {
            return Poll::Ready(Polled::Closed);
        };
        me.waker = None;
        if shared.closing.load(Relaxed) {
            return Poll::Ready(Polled::Closed);
        }
        if me.next < base {
            return Poll::Ready(Polled::Overflow {
                behind: head - me.next,
            });
        }
        let was_slowest = me.next == base;
        let (mut count, mut bytes) = (0, 0);
        for (channel, entry) in log.entries.range((me.next - base) as usize..) {
            me.next += 1;
            if !entry.is_for(&me.client) {
                continue;
            }
            count += 1;
            bytes += entry.frame.len();
            out.push((channel.clone(), entry.clone()));
            if bytes >= max_bytes {
                break;
            }
        }
        let polled = if count > 0 {
            me.keep_alive_due = false;
            me.last_sent_ms = shared.clock.now_ms();
            Poll::Ready(Polled::Entries)
        } else if std::mem::take(&mut me.keep_alive_due) {
            me.last_sent_ms = shared.clock.now_ms();
            Poll::Ready(Polled::KeepAlive)
        } else {
            me.waker = Some(cx.waker().clone());
            Poll::Pending
        };
        if was_slowest {
            log.trim();
        }
        polled
    }
}

impl Drop for PatternReader {
    fn drop(&mut self) {
        self.broker.unsubscribe_pattern(&self.feed, self.id);
    }
}

/// An entry for pattern feeds alone (no channel log holds it): a pattern's stream
/// gives it its own id.
fn pattern_entry(state: &mut State, arrival: &Arrival<'_>) -> Arc<Entry> {
    let publish = arrival.publish;
    Arc::new(Entry {
        origin: arrival.origin,
        seq: arrival.seq,
        arrived_ms: arrival.now_ms,
        id_ms: arrival.id_ms,
        target: arrival.target.clone(),
        publisher_id: publish.id.clone(),
        cursor: String::new(),
        frame: encode_event(None, publish.event.as_deref(), publish.retry, &publish.data),
        stamp: state.ledger.next_stamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_end_in_a_star_after_a_dot_or_colon() {
        assert_eq!(pattern_prefix("orders.*"), Some("orders."));
        assert_eq!(pattern_prefix("a:b:*"), Some("a:b:"));
        for name in ["orders", "orders*", "*", "orders.*.x", "*.orders", ".*x"] {
            assert_eq!(pattern_prefix(name), None, "{name}");
        }
    }

    #[test]
    fn a_channel_is_looked_up_at_each_boundary() {
        let found: Vec<&str> = prefixes("shop.eu:orders.42").collect();
        assert_eq!(found, ["shop.", "shop.eu:", "shop.eu:orders."]);
        assert_eq!(prefixes("news").count(), 0);
    }
}
