//! Publisher ids of the publishes to every channel this node accepted, for as long
//! as the replay window: such a publish is not kept in any one channel that could
//! answer for it (channels come and go), so its idempotency key is kept here.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub(crate) struct BroadcastIds {
    /// Id → when it was accepted (ms).
    ids: HashMap<String, u64>,
    /// The same ids in the order they were accepted, for expiry.
    order: VecDeque<(u64, String)>,
}

/// Most ids kept: a publisher that sends more publishes to every channel than this
/// inside the replay window loses idempotency for the oldest.
const MAX_IDS: usize = 10_000;

impl BroadcastIds {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    pub(crate) fn insert(&mut self, id: String, now_ms: u64) {
        if self.ids.insert(id.clone(), now_ms).is_none() {
            self.order.push_back((now_ms, id));
        }
        while self.order.len() > MAX_IDS {
            self.pop_oldest();
        }
    }

    /// Forgets the ids accepted before `cutoff_ms`.
    pub(crate) fn expire(&mut self, cutoff_ms: u64) {
        while self.order.front().is_some_and(|(at, _)| *at < cutoff_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.ids.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_expire_with_the_replay_window_and_past_the_count() {
        let mut ids = BroadcastIds::default();
        ids.insert("a".into(), 10);
        ids.insert("b".into(), 20);
        ids.insert("a".into(), 30); // a retry does not extend it
        assert!(ids.contains("a") && ids.contains("b"));
        ids.expire(11);
        assert!(!ids.contains("a") && ids.contains("b"));
        for i in 0..MAX_IDS {
            ids.insert(i.to_string(), 40);
        }
        assert!(!ids.contains("b"), "the oldest goes past the count");
        assert_eq!(ids.ids.len(), MAX_IDS);
        assert_eq!(ids.order.len(), MAX_IDS);
    }
}
