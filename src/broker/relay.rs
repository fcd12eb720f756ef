//! What peers read of this node: its accepted events in sequence order (the outbox),
//! and a wait for the next one.

use std::pin::pin;

use super::{Broker, RelayBatch};

impl Broker {
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
}
