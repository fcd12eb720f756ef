//! One channel on one node: its subscribers and its log.
//!
//! The log is both the replay history and every subscriber's buffer: a subscriber
//! is a position in it. Appending never waits for a reader; a reader that falls
//! more than its buffer behind (or below what the log still holds) is told so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::fanout::{DirectWrites, Fanout, Sink, Written};
use super::ledger::{channel_cost, Ledger};
use crate::event::{encode_event, encode_id_only, Cursor, Frontier, Origin, Publish};
use bytes::{Bytes, BytesMut};

/// Bytes counted for each retained event besides its frame, cursor and publisher id:
/// the entry itself, its reference counts and its slot in the log.
pub(crate) const ENTRY_OVERHEAD: usize =
    std::mem::size_of::<Entry>() + 3 * std::mem::size_of::<usize>();

/// One event as stored in a channel's log.
#[derive(Debug)]
pub struct Entry {
    pub origin: Origin,
    pub seq: u64,
    /// Local arrival time; age eviction uses it.
    pub arrived_ms: u64,
    /// The time its id carries: how far this node was caught up on every origin
    /// when it arrived (see `watermark`); a pattern's cursor takes it.
    pub id_ms: u64,
    /// Only this client receives the event, when set.
    pub target: Option<Arc<str>>,
    pub publisher_id: Option<String>,
    /// The channel's cursor after this event (the frame's `id:`).
    pub cursor: String,
    /// The encoded SSE frame, shared by every receiver.
    pub frame: Bytes,
    /// Position among every append on this node (see [`Ledger`]).
    pub(crate) stamp: u64,
}

impl Entry {
    pub fn is_for(&self, client: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == client)
    }

    /// The frame with its `id:` moved up to cover `seen` as well: for a subscriber
    /// that has seen, through another node, events this node does not have yet.
    /// Its next resume must not ask for those again.
    pub(crate) fn frame_covering(&self, seen: &Frontier) -> Bytes {
        let (Ok(mut cursor), Some(end)) = (
            Cursor::parse(&self.cursor),
            self.frame.iter().position(|b| *b == b'\n'),
        ) else {
            return self.frame.clone();
        };
        for (origin, seq) in seen.iter() {
            cursor.frontier.advance(origin, seq);
        }
        let id = encode_id_only(&cursor.encode());
        // `encode_id_only` ends the block with a blank line; keep one line break.
        let mut frame = BytesMut::with_capacity(self.frame.len() + id.len());
        frame.extend_from_slice(&id[..id.len() - 1]);
        frame.extend_from_slice(&self.frame[end + 1..]);
        frame.freeze()
    }

    /// Bytes this event counts against `--replay.maxBytes`: its encoded frame, its
    /// cursor and publisher id, and a fixed overhead.
    pub fn cost(&self) -> usize {
        self.frame.len()
            + self.cursor.len()
            + self.publisher_id.as_ref().map_or(0, String::len)
            + ENTRY_OVERHEAD
    }
}

/// Who writes a subscriber's next bytes.
pub(crate) enum Mode {
    /// Its task: it has bytes to write or will look for more before it waits.
    Running,
    /// Nobody: the subscriber has every event for it and nothing half-written, and
    /// its task waits with this waker. An append may write the next event straight
    /// to its sink (becoming [`Mode::Writing`]), or else wakes the task.
    Parked(Waker),
    /// An append, outside the locks: the task must not write meanwhile; the waker is
    /// its, for when the append is done (see [`Log::settle`]). The append holds the
    /// subscriber's sink meanwhile and gives it back then.
    Writing(Waker),
}

/// A subscriber as its channel sees it.
pub(crate) struct Subscriber {
    pub(crate) client: Arc<str>,
    /// Position in the log of the next event to look at for it.
    pub(crate) next: u64,
    pub(crate) mode: Mode,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    /// The part of a frame a direct write could not take: it goes out first.
    pub(crate) carry: Option<Bytes>,
    /// Wall time (ms) of the last bytes handed to the subscriber, for keep-alives.
    pub(crate) last_sent_ms: u64,
    /// The keep-alive tick found it silent for the interval: a comment goes out next.
    pub(crate) keep_alive_due: bool,
    /// Set when it resumed with a cursor ahead of this node (it saw events through
    /// another node that have not reached this one yet): those events are skipped
    /// when they arrive. Cleared once the channel has caught up with it.
    pub(crate) seen: Option<Box<Frontier>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Running => "running",
            Mode::Parked(_) => "parked",
            Mode::Writing(_) => "writing",
        };
        f.debug_struct("Subscriber")
            .field("client", &self.client)
            .field("next", &self.next)
            .field("mode", &mode)
            .field("direct", &self.sink.is_some())
            .field("carry", &self.carry.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    pub(crate) fn new(client: Arc<str>, next: u64, now_ms: u64) -> Self {
        Subscriber {
            client,
            next,
            mode: Mode::Running,
            sink: None,
            carry: None,
            last_sent_ms: now_ms,
            keep_alive_due: false,
            seen: None,
        }
    }

    /// Whether `entry` goes to this subscriber: addressed to it, and not already
    /// received through another node.
    pub(crate) fn wants(&self, entry: &Entry) -> bool {
        entry.is_for(&self.client)
            && self
                .seen
                .as_ref()
                .is_none_or(|seen| entry.seq > seen.get(entry.origin))
    }

    /// Whether an append is writing to its sink, which the task must then wait out:
    /// if so, the task's waker is left for the append to use when it is done.
    pub(crate) fn being_written(&mut self, cx: &std::task::Context<'_>) -> bool {
        let Mode::Writing(waker) = &mut self.mode else {
            return false;
        };
        if !waker.will_wake(cx.waker()) {
            *waker = cx.waker().clone();
        }
        true
    }

    /// Ends a direct write of `frame` to it (see [`Log::settle`]); `head` is its
    /// channel's log head.
    fn settle(
        &mut self,
        head: u64,
        frame: &Bytes,
        Written { result, sink, .. }: Written,
        now_ms: u64,
        closing: bool,
        wakers: &mut Vec<Waker>,
    ) {
        self.sink = Some(sink);
        let Mode::Writing(waker) = std::mem::replace(&mut self.mode, Mode::Running) else {
            debug_assert!(false, "settling a subscriber that was not being written");
            return;
        };
        let written = result.unwrap_or(0).min(frame.len());
        if written > 0 {
            self.last_sent_ms = now_ms;
        }
        if written < frame.len() {
            self.carry = Some(frame.slice(written..));
        }
        if self.carry.is_none() && self.next == head && !closing {
            self.mode = Mode::Parked(waker);
        } else {
            wakers.push(waker);
        }
    }

    /// Takes the task's waker, leaving the subscriber to its task.
    fn unpark(&mut self) -> Option<Waker> {
        match std::mem::replace(&mut self.mode, Mode::Running) {
            Mode::Parked(waker) => Some(waker),
            other => {
                self.mode = other;
                None
            }
        }
    }
}

/// An event as it is appended to a log: who accepted it with which sequence, when it
/// arrived here, what it is, and the one client it is for (if any).
#[derive(Debug, Clone)]
pub(crate) struct Arrival<'a> {
    pub(crate) origin: Origin,
    pub(crate) seq: u64,
    pub(crate) now_ms: u64,
    /// The time its id carries (see `watermark`): `now_ms` or earlier.
    pub(crate) id_ms: u64,
    pub(crate) publish: &'a Publish,
    pub(crate) target: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Log {
    /// The channel's name, as the ledger indexes it.
    name: Arc<str>,
    /// Retained events; `entries[0]` is at position `base`.
    pub(crate) entries: VecDeque<Arc<Entry>>,
    pub(crate) base: u64,
    /// Highest sequence per origin ever appended here.
    pub(crate) frontier: Frontier,
    /// Highest sequence per origin evicted from `entries`: a cursor below it missed events.
    pub(crate) floor: Frontier,
    /// Wall time (ms) since which this node has seen every event of the channel.
    pub(crate) known_from_ms: u64,
    /// The ledger's last stamp when the channel last had no subscriber: a publish to
    /// every channel stamped after it passed this channel by (see
    /// `Broker::publish_all`).
    pub(crate) dormant_since: u64,
    /// Subscriber id → its client id and, while it waits for events, its waker.
    pub(crate) subscribers: BTreeMap<u64, Subscriber>,
    /// Publisher ids of retained events → the cursor they were given.
    pub(crate) publisher_ids: HashMap<String, String>,
    /// Set when the channel leaves the broker's map.
    pub(crate) removed: bool,
    /// Bytes of `entries`, as [`Entry::cost`] counts them.
    pub(crate) bytes: usize,
    /// Stamp and arrival time of the newest event ever appended (0: none yet).
    pub(crate) newest_stamp: u64,
    pub(crate) newest_ms: u64,
}

impl Log {
    pub(crate) fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.entries.is_empty()
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn is_named(&self, name: &str) -> bool {
        &*self.name == name
    }

    pub(crate) fn has_client(&self, client: &str) -> bool {
        self.subscribers.values().any(|s| &*s.client == client)
    }

    /// Hands the newest entry, `entry`, to the subscribers it is for: a parked one with
    /// a sink is marked for a direct write, any other parked one for a wake; both
    /// happen in [`Fanout::finish`], after the locks are released. Returns how many
    /// subscribers the entry is for.
    pub(crate) fn deliver(
        &mut self,
        channel: &Arc<Channel>,
        entry: &Entry,
        out: &mut Fanout,
    ) -> usize {
        let head = self.head();
        let mut count = 0;
        let mut sinks = Vec::new();
        let subscribers = self.subscribers.len();
        for (id, subscriber) in self.subscribers.iter_mut() {
            let parked = matches!(subscriber.mode, Mode::Parked(_));
            if !subscriber.wants(entry) {
                if parked {
                    // Nothing for it: it stays caught up.
                    subscriber.next = head;
                }
                continue;
            }
            count += 1;
            if !parked {
                continue;
            }
            // A parked subscriber has had everything before this entry.
            debug_assert_eq!(subscriber.next + 1, head);
            let Some(waker) = subscriber.unpark() else {
                continue;
            };
            // Its frames need their own ids while it is ahead of this node.
            let direct = match subscriber.seen {
                None => subscriber.sink.take(),
                Some(_) => None,
            };
            match direct {
                // The sink goes with the write and comes back when it settles:
                // moved, not cloned, so the append touches no reference count.
                Some(sink) => {
                    // One allocation per append, not one per growth step.
                    if sinks.capacity() == 0 {
                        sinks.reserve_exact(subscribers);
                    }
                    sinks.push((*id, sink));
                    subscriber.mode = Mode::Writing(waker);
                    subscriber.next = head;
                }
                None => out.wakers.push(waker),
            }
        }
        if !sinks.is_empty() {
            out.writes.push(DirectWrites {
                channel: channel.clone(),
                frame: entry.frame.clone(),
                sinks,
            });
        }
        count
    }

    /// Ends the direct writes of `frame`, given as (subscriber id, result) in the
    /// ascending id order [`Log::deliver`] listed them, to the subscribers still
    /// here: one pass over the subscribers, not a search per write. All of a
    /// subscriber's frame written and nothing newer for it: parked again. Otherwise
    /// its task takes over, first with whatever part of the frame did not go out; a
    /// failed write is left to the task too, which meets the error on its own next
    /// write.
    pub(crate) fn settle(
        &mut self,
        results: impl IntoIterator<Item = Written>,
        frame: &Bytes,
        now_ms: u64,
        closing: bool,
        wakers: &mut Vec<Waker>,
    ) {
        let head = self.head();
        let mut subscribers = self.subscribers.iter_mut().peekable();
        let mut last = None;
        for written in results {
            let id = written.id;
            debug_assert!(last < Some(id), "direct writes settled out of id order");
            last = Some(id);
            // Passes those not written (and any that joined meanwhile); one that
            // left since is not found.
            while subscribers.next_if(|(other, _)| **other < id).is_some() {}
            if let Some((_, subscriber)) = subscribers.next_if(|(other, _)| **other == id) {
                subscriber.settle(head, frame, written, now_ms, closing, wakers);
            }
        }
    }

    /// Marks parked subscribers silent since `silent_since_ms` for a keep-alive
    /// comment and queues their wakes.
    pub(crate) fn keep_alive(&mut self, silent_since_ms: u64, out: &mut Fanout) -> usize {
        let mut due = 0;
        for subscriber in self.subscribers.values_mut() {
            if subscriber.last_sent_ms <= silent_since_ms
                && matches!(subscriber.mode, Mode::Parked(_))
            {
                subscriber.keep_alive_due = true;
                out.wakers.extend(subscriber.unpark());
                due += 1;
            }
        }
        due
    }

    /// Wakes every parked subscriber (the node is closing its streams).
    pub(crate) fn wake_all(&mut self, out: &mut Fanout) {
        for subscriber in self.subscribers.values_mut() {
            out.wakers.extend(subscriber.unpark());
        }
    }

    /// Appends an event and evicts past `max_events`. Returns the new entry.
    pub(crate) fn append(
        &mut self,
        arrival: &Arrival<'_>,
        max_events: usize,
        ledger: &mut Ledger,
    ) -> Arc<Entry> {
        let Arrival {
            origin,
            seq,
            now_ms,
            id_ms,
            publish,
            ..
        } = *arrival;
        self.frontier.advance(origin, seq);
        let cursor = Cursor {
            time_ms: id_ms,
            frontier: self.frontier.clone(),
        }
        .encode();
        let frame = encode_event(
            Some(&cursor),
            publish.event.as_deref(),
            publish.retry,
            &publish.data,
        );
        if let Some(id) = &publish.id {
            self.publisher_ids.insert(id.clone(), cursor.clone());
        }
        let entry = Arc::new(Entry {
            origin,
            seq,
            arrived_ms: now_ms,
            id_ms,
            target: arrival.target.clone(),
            publisher_id: publish.id.clone(),
            cursor,
            frame,
            stamp: ledger.next_stamp(),
        });
        if self.entries.is_empty() {
            ledger.set_front(entry.stamp, &self.name);
        }
        if self.subscribers.is_empty() {
            ledger.clear_dormant(self.newest_stamp, &self.name);
            ledger.set_dormant(entry.stamp, &self.name);
        }
        self.newest_stamp = entry.stamp;
        self.newest_ms = now_ms;
        let cost = entry.cost();
        self.bytes += cost;
        ledger.bytes += cost;
        ledger.events += 1;
        self.entries.push_back(entry.clone());
        while self.entries.len() > max_events {
            self.evict_front(ledger);
        }
        entry
    }

    /// Drops events that arrived before `cutoff_ms`.
    pub(crate) fn expire(&mut self, cutoff_ms: u64, ledger: &mut Ledger) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.arrived_ms < cutoff_ms)
        {
            self.evict_front(ledger);
        }
    }

    /// Drops the oldest retained event; the only way events leave a live log, so the
    /// floor (for resumes) and `base` (for subscribers still below it) always follow.
    /// Returns the bytes freed.
    pub(crate) fn evict_front(&mut self, ledger: &mut Ledger) -> usize {
        let Some(old) = self.entries.pop_front() else {
            return 0;
        };
        ledger.clear_front(old.stamp);
        if let Some(front) = self.entries.front() {
            ledger.set_front(front.stamp, &self.name);
        }
        let cost = old.cost();
        self.bytes -= cost;
        ledger.bytes -= cost;
        ledger.events -= 1;
        self.base += 1;
        self.floor.advance(old.origin, old.seq);
        if let Some(id) = &old.publisher_id {
            self.publisher_ids.remove(id);
        }
        cost
    }

    pub(crate) fn add_subscriber(&mut self, id: u64, subscriber: Subscriber, ledger: &mut Ledger) {
        if self.subscribers.is_empty() {
            ledger.clear_dormant(self.newest_stamp, &self.name);
            ledger.set_live(&self.name);
        }
        self.subscribers.insert(id, subscriber);
    }

    pub(crate) fn remove_subscriber(&mut self, id: u64, ledger: &mut Ledger) {
        if self.subscribers.remove(&id).is_some() && self.subscribers.is_empty() && !self.removed {
            self.dormant_since = ledger.last_stamp();
            ledger.clear_live(&self.name);
            ledger.set_dormant(self.newest_stamp, &self.name);
        }
    }

    /// Takes the log out of the ledger as its channel leaves the broker's map.
    pub(crate) fn forget(&mut self, ledger: &mut Ledger) {
        if self.removed {
            return;
        }
        self.removed = true;
        if let Some(front) = self.entries.front() {
            ledger.clear_front(front.stamp);
        }
        ledger.bytes -= self.bytes;
        ledger.state_bytes -= channel_cost(&self.name);
        ledger.events -= self.entries.len();
        self.bytes = 0;
        if self.subscribers.is_empty() {
            ledger.clear_dormant(self.newest_stamp, &self.name);
        } else {
            ledger.clear_live(&self.name);
        }
    }

    /// Whether a subscriber resuming from `cursor` can be given everything it missed.
    pub(crate) fn can_resume(&self, cursor: &Cursor) -> bool {
        cursor.time_ms >= self.known_from_ms && cursor.frontier.covers(&self.floor)
    }
}

/// A channel: its log behind a mutex.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) name: Arc<str>,
    log: Mutex<Log>,
}

impl Channel {
    /// A channel with no subscribers yet: the ledger counts it as dormant.
    pub(crate) fn new(name: Arc<str>, known_from_ms: u64, ledger: &mut Ledger) -> Self {
        ledger.set_dormant(0, &name);
        ledger.state_bytes += channel_cost(&name);
        Channel {
            name: name.clone(),
            log: Mutex::new(Log {
                name,
                entries: VecDeque::new(),
                base: 0,
                frontier: Frontier::default(),
                floor: Frontier::default(),
                known_from_ms,
                dormant_since: ledger.last_stamp(),
                subscribers: BTreeMap::new(),
                publisher_ids: HashMap::new(),
                removed: false,
                bytes: 0,
                newest_stamp: 0,
                newest_ms: 0,
            }),
        }
    }

    /// Locks the log. A panic while holding it cannot leave the log half-written in
    /// a way readers could misread, so a poisoned lock is used as is.
    pub(crate) fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
