//! This origin's accepted events, in sequence order, for peers to pull: the broker's
//! [`Outlet`], which encodes each event once as its relay frame (`wire`) and keeps
//! it for every peer's stream. Bounded by count and bytes: a peer that is away
//! longer than the bound gets an explicit gap.
//!
//! It has its own lock, inside the broker's (the broker hands events over under
//! its lock, in sequence order); peers' streams read it without the broker's.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::wire::{encode_event, EncodedEvent};
use crate::broker::{Accepted, Outlet};

/// What a reader gets from the outbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RelayBatch {
    /// Encoded events from the requested sequence on (possibly none yet).
    Events(Vec<EncodedEvent>),
    /// Events up to and including `upto` are gone; continue from `upto + 1`.
    Gap { upto: u64 },
}

/// The queue of encoded events, shared by the broker (writer) and every peer's
/// relay stream (readers).
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Woken when the queue grew.
    grew: Notify,
}

#[derive(Debug)]
struct Queue {
    /// (acceptance time in ms, encoded event).
    entries: VecDeque<(u64, EncodedEvent)>,
    /// Sequence of `entries[0]`.
    first_seq: u64,
    /// Acceptance time of the newest event evicted (0: none yet).
    evicted_ms: u64,
    /// Payload bytes of `entries`.
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                first_seq: 1,
                evicted_ms: 0,
                bytes: 0,
                max_events,
                max_bytes,
            }),
            grew: Notify::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events from `from` on, at most `max_events` of them and, past the first,
    /// at most `max_bytes` of frames.
    pub(crate) fn read(&self, from: u64, max_events: usize, max_bytes: usize) -> RelayBatch {
        let queue = self.queue();
        if from < queue.first_seq {
            return RelayBatch::Gap {
                upto: queue.first_seq - 1,
            };
        }
        let start = (from - queue.first_seq) as usize;
        let mut bytes = 0;
        let mut events = Vec::new();
        for (_, event) in queue.entries.iter().skip(start).take(max_events) {
            bytes += event.frame().len();
            if bytes > max_bytes && !events.is_empty() {
                break;
            }
            events.push(event.clone());
        }
        RelayBatch::Events(events)
    }

    /// Whether the outbox holds an event at or after `from` (or lost some before it).
    pub(crate) fn has(&self, from: u64) -> bool {
        self.queue().next_seq() > from
    }

    /// The first sequence accepted at or after `since_ms` (or the next one to come).
    /// When events accepted at or after `since_ms` were already evicted, it is the
    /// last evicted sequence instead: the reader starts with a gap for them, not
    /// silently after them.
    pub(crate) fn first_since(&self, since_ms: u64) -> u64 {
        let queue = self.queue();
        if queue.first_seq > 1 && queue.evicted_ms >= since_ms {
            return queue.first_seq - 1;
        }
        let skip = queue
            .entries
            .iter()
            .take_while(|(t, _)| *t < since_ms)
            .count();
        queue.first_seq + skip as u64
    }

    /// Waits until the outbox holds an event at or after `from`.
    pub(crate) async fn wait(&self, from: u64) {
        loop {
            let mut notified = pin!(self.grew.notified());
            notified.as_mut().enable();
            if self.queue().next_seq() > from {
                return;
            }
            notified.await;
        }
    }

    /// (events, payload bytes) waiting in the outbox.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        let queue = self.queue();
        (queue.entries.len(), queue.bytes)
    }
}

impl Queue {
    /// The sequence the next event pushed gets.
    fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// Appends the event with sequence `seq`, which must follow the last one.
    fn push(&mut self, seq: u64, accepted_ms: u64, encoded: EncodedEvent) {
        debug_assert_eq!(seq, self.next_seq());
        self.bytes += encoded.payload().len();
        self.entries.push_back((accepted_ms, encoded));
        while self.entries.len() > self.max_events
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some((accepted_ms, old)) = self.entries.pop_front() {
                self.evicted_ms = self.evicted_ms.max(accepted_ms);
                self.bytes -= old.payload().len();
                self.first_seq += 1;
            }
        }
    }
}

impl Outlet for Outbox {
    fn accepted(&self, accepted_ms: u64, event: Accepted<'_>) {
        // Encoded before the queue's lock: readers wait only for the push.
        let encoded = encode_event(event);
        self.queue().push(event.seq, accepted_ms, encoded);
    }

    fn flush(&self) {
        self.grew.notify_waiters();
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
