//! This origin's accepted events, in sequence order, for peers to pull. Bounded by
//! count and bytes: a peer that is away longer than the bound gets an explicit gap.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where a relayed event goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// One channel.
    Channel(String),
    /// One client of one channel.
    Client { channel: String, client: String },
    /// Every channel the receiving node holds.
    All,
}

/// One accepted event as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayEvent {
    pub seq: u64,
    pub route: Route,
    /// The publish body, as `Publish::from_json` reads it.
    pub publish: Box<serde_json::value::RawValue>,
}

/// What a reader gets from the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayBatch {
    /// Encoded [`RelayEvent`]s from the requested sequence on (possibly none yet).
    Events(Vec<Bytes>),
    /// Events up to and including `upto` are gone; continue from `upto + 1`.
    Gap { upto: u64 },
}

#[derive(Debug)]
pub(crate) struct Outbox {
    /// (acceptance time in ms, encoded event).
    entries: VecDeque<(u64, Bytes)>,
    /// Sequence of `entries[0]`.
    first_seq: u64,
    /// Acceptance time of the newest event evicted (0: none yet).
    evicted_ms: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Outbox {
            entries: VecDeque::new(),
            first_seq: 1,
            evicted_ms: 0,
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Appends the event with sequence `seq`, which must follow the last one.
    pub(crate) fn push(&mut self, seq: u64, accepted_ms: u64, encoded: Bytes) {
        debug_assert_eq!(seq, self.first_seq + self.entries.len() as u64);
        self.bytes += encoded.len();
        self.entries.push_back((accepted_ms, encoded));
        while self.entries.len() > self.max_events
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some((accepted_ms, old)) = self.entries.pop_front() {
                self.evicted_ms = self.evicted_ms.max(accepted_ms);
                self.bytes -= old.len();
                self.first_seq += 1;
            }
        }
    }

    /// The events from `from` on, at most `max` of them.
    pub(crate) fn read(&self, from: u64, max: usize) -> RelayBatch {
        if from < self.first_seq {
            return RelayBatch::Gap {
                upto: self.first_seq - 1,
            };
        }
        let start = (from - self.first_seq) as usize;
        RelayBatch::Events(
            self.entries
                .iter()
                .skip(start)
                .take(max)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    /// The first sequence accepted at or after `since_ms` (or the next one to come).
    /// When events accepted at or after `since_ms` were already evicted, it is the
    /// last evicted sequence instead: the reader starts with a gap for them, not
    /// silently after them.
    pub(crate) fn first_since(&self, since_ms: u64) -> u64 {
        if self.first_seq > 1 && self.evicted_ms >= since_ms {
            return self.first_seq - 1;
        }
        let skip = self
            .entries
            .iter()
            .take_while(|(t, _)| *t < since_ms)
            .count();
        self.first_seq + skip as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_get_events_in_order_then_a_gap_when_evicted() {
        let mut outbox = Outbox::new(3, 1 << 20);
        for seq in 1..=5 {
            outbox.push(seq, seq * 10, Bytes::from(seq.to_string()));
        }
        assert_eq!(outbox.read(1, 10), RelayBatch::Gap { upto: 2 });
        assert_eq!(
            outbox.read(3, 10),
            RelayBatch::Events(vec![Bytes::from("3"), Bytes::from("4"), Bytes::from("5")])
        );
        assert_eq!(
            outbox.read(5, 1),
            RelayBatch::Events(vec![Bytes::from("5")])
        );
        assert_eq!(outbox.read(6, 10), RelayBatch::Events(vec![]));
        // Events 1 and 2 (accepted at 10 and 20) are gone: a reader that wants
        // them starts with the gap.
        assert_eq!(outbox.first_since(0), 2);
        assert_eq!(outbox.read(2, 10), RelayBatch::Gap { upto: 2 });
        assert_eq!(outbox.first_since(20), 2);
        assert_eq!(outbox.first_since(21), 3);
        assert_eq!(outbox.first_since(41), 5);
        assert_eq!(outbox.first_since(1000), 6);
    }

    #[test]
    fn the_byte_bound_evicts_too() {
        let mut outbox = Outbox::new(100, 10);
        for seq in 1..=4 {
            outbox.push(seq, 0, Bytes::from_static(b"abcd"));
        }
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.bytes(), 8);
        assert_eq!(outbox.read(2, 10), RelayBatch::Gap { upto: 2 });
    }
}
