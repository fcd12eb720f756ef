//! The node-wide bound of replay history in bytes (`--replay.maxBytes`): every append
//! goes through here, and past the bound the node's oldest events go first, whatever
//! their channel.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::channel::{Arrival, Log};
use super::fanout::Fanout;
use super::{warn_due, Broker, Entry, State};

impl Broker {
    /// Appends to a channel's log (its state lock held), then evicts the node's oldest
    /// events while the history is over `replay_max_bytes`. The event just appended is
    /// kept, so one event larger than the bound is still delivered. The entry also
    /// goes to the patterns that match the channel (their wakes left in `fanout`).
    pub(super) fn append(
        &self,
        state: &mut State,
        log: &mut Log,
        arrival: &Arrival<'_>,
        fanout: &mut Fanout,
    ) -> Arc<Entry> {
        let settings = &self.shared.settings;
        let entry = log.append(arrival, settings.replay_events, &mut state.ledger);
        self.feed_patterns(state, log.name(), &entry, fanout);
        if state.ledger.counted() > settings.replay_max_bytes {
            self.trim_history(state, log, arrival.now_ms);
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
}
