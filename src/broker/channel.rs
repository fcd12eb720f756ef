//! One channel on one node: its subscribers and its log.
//!
//! The log is both the replay history and every subscriber's buffer: a subscriber
//! is a position in it. Appending never waits for a reader; a reader that falls
//! more than its buffer behind (or below what the log still holds) is told so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::event::{encode_event, Cursor, Frontier, Origin, Publish};
use bytes::Bytes;

/// One event as stored in a channel's log.
#[derive(Debug)]
pub struct Entry {
    pub origin: Origin,
    pub seq: u64,
    /// Local arrival time; age eviction and cursors use it.
    pub arrived_ms: u64,
    /// Only this client receives the event, when set.
    pub target: Option<Arc<str>>,
    pub publisher_id: Option<String>,
    /// The channel's cursor after this event (the frame's `id:`).
    pub cursor: String,
    /// The encoded SSE frame, shared by every receiver.
    pub frame: Bytes,
}

impl Entry {
    pub fn is_for(&self, client: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == client)
    }
}

/// A subscriber as its channel sees it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) client: Arc<str>,
    /// Set while the subscriber waits for an event; taken by the append that wakes it.
    pub(crate) waker: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct Log {
    /// Retained events; `entries[0]` is at position `base`.
    pub(crate) entries: VecDeque<Arc<Entry>>,
    pub(crate) base: u64,
    /// Highest sequence per origin ever appended here.
    pub(crate) frontier: Frontier,
    /// Highest sequence per origin evicted from `entries`: a cursor below it missed events.
    pub(crate) floor: Frontier,
    /// Wall time (ms) since which this node has seen every event of the channel.
    pub(crate) known_from_ms: u64,
    /// Subscriber id → its client id and, while it waits for events, its waker.
    pub(crate) subscribers: BTreeMap<u64, Subscriber>,
    /// Publisher ids of retained events → the cursor they were given.
    pub(crate) publisher_ids: HashMap<String, String>,
    /// Set when the channel leaves the broker's map.
    pub(crate) removed: bool,
}

impl Log {
    pub(crate) fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.entries.is_empty()
    }

    pub(crate) fn has_client(&self, client: &str) -> bool {
        self.subscribers.values().any(|s| &*s.client == client)
    }

    /// Counts the subscribers `entry` is for, and takes the wakers of those of them
    /// that are waiting. Waking happens after the locks are released.
    pub(crate) fn wake_for(&mut self, entry: &Entry, wakers: &mut Vec<Waker>) -> usize {
        let mut count = 0;
        for subscriber in self.subscribers.values_mut() {
            if entry.is_for(&subscriber.client) {
                count += 1;
                wakers.extend(subscriber.waker.take());
            }
        }
        count
    }

    /// Appends an event and evicts past `max_events`. Returns the new entry.
    pub(crate) fn append(
        &mut self,
        origin: Origin,
        seq: u64,
        now_ms: u64,
        publish: &Publish,
        target: Option<Arc<str>>,
        max_events: usize,
    ) -> Arc<Entry> {
        self.frontier.advance(origin, seq);
        let cursor = Cursor {
            time_ms: now_ms,
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
            target,
            publisher_id: publish.id.clone(),
            cursor,
            frame,
        });
        self.entries.push_back(entry.clone());
        while self.entries.len() > max_events {
            self.evict_front();
        }
        entry
    }

    /// Drops events that arrived before `cutoff_ms`.
    pub(crate) fn expire(&mut self, cutoff_ms: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.arrived_ms < cutoff_ms)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.base += 1;
            self.floor.advance(old.origin, old.seq);
            if let Some(id) = &old.publisher_id {
                self.publisher_ids.remove(id);
            }
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
    pub(crate) fn new(name: Arc<str>, known_from_ms: u64) -> Self {
        Channel {
            name,
            log: Mutex::new(Log {
                entries: VecDeque::new(),
                base: 0,
                frontier: Frontier::default(),
                floor: Frontier::default(),
                known_from_ms,
                subscribers: BTreeMap::new(),
                publisher_ids: HashMap::new(),
                removed: false,
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
