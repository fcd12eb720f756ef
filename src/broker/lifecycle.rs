//! Channel lifecycle: a channel state is made with its first subscriber or event and
//! removed once it has neither (at once when the last subscriber leaves, or when its
//! history expires or is evicted); at `--channels.max` the quietest channel kept only
//! for its history makes room. Also what `/status` and `/metrics` read of it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::channel::{Channel, Log};
use super::{warn_due, Broker, BrokerStats, ChannelsFull, State};

impl Broker {
    /// The channel's state, created if absent. A new state has seen everything since
    /// the replay window before now: had an event arrived inside it, the previous
    /// state would still exist, unless this node gave it up early (`dropped_ms`).
    /// At `max_channels`, the dormant channel that has been quiet longest makes room;
    /// if every channel has subscribers, none is made.
    pub(super) fn channel(
        &self,
        state: &mut State,
        name: &str,
        now_ms: u64,
    ) -> Result<Arc<Channel>, ChannelsFull> {
        if let Some(channel) = state.channels.get(name) {
            return Ok(channel.clone());
        }
        let limit = self.shared.settings.max_channels;
        while state.channels.len() >= limit {
            let Some(victim) = state.ledger.quietest_dormant() else {
                self.shared.metrics.channels_refused.fetch_add(1, Relaxed);
                if warn_due(&mut state.warned_channels_ms, now_ms) {
                    tracing::warn!(
                        limit,
                        "--channels.max reached and every channel has subscribers: new channels are refused"
                    );
                }
                return Err(ChannelsFull { limit });
            };
            let Some(channel) = state.channels.get(&victim).cloned() else {
                state.ledger.forget_name(&victim);
                continue;
            };
            self.remove_channel(state, &channel, &mut channel.log(), now_ms);
            self.shared.metrics.channels_evicted.fetch_add(1, Relaxed);
            if warn_due(&mut state.warned_channels_ms, now_ms) {
                tracing::warn!(
                    limit,
                    "--channels.max reached: evicting the channels without subscribers that were quiet longest"
                );
            }
        }
        let known_from = self
            .replay_cutoff(now_ms)
            .max(self.shared.started_ms)
            .max(state.dropped_ms);
        let name: Arc<str> = Arc::from(name);
        let channel = Arc::new(Channel::new(name.clone(), known_from, &mut state.ledger));
        state.channels.insert(name, channel.clone());
        Ok(channel)
    }

    /// Takes a channel state out of the map and the ledger. If it held an event still
    /// inside the replay window, new channel states stop vouching for the time before now.
    pub(super) fn remove_channel(
        &self,
        state: &mut State,
        channel: &Channel,
        log: &mut Log,
        now_ms: u64,
    ) {
        if log.removed {
            return;
        }
        if log.newest_stamp != 0 && log.newest_ms >= self.replay_cutoff(now_ms) {
            // A cursor issued earlier in this same millisecond predates the loss too.
            state.dropped_ms = state.dropped_ms.max(now_ms + 1);
        }
        log.forget(&mut state.ledger);
        state.channels.remove(&channel.name);
    }

    /// Whether `client` is subscribed to `channel` on this node, alone or through a
    /// pattern.
    pub fn has_client(&self, channel: &str, client: &str) -> bool {
        let state = self.state();
        state
            .channels
            .get(channel)
            .is_some_and(|c| c.log().has_client(client))
            || self.pattern_has_client(&state, channel, client)
    }

    /// Drops history past the replay age and channels left with nothing. Run
    /// periodically; returns how many channel states were removed. Walks the node's
    /// events oldest first and stops at the first one inside the window, so its cost
    /// follows what expires, not the number of channels.
    pub fn expire(&self) -> usize {
        let now = self.shared.clock.now_ms();
        let cutoff = self.replay_cutoff(now);
        let mut guard = self.state();
        let state = &mut *guard;
        let mut removed = 0;
        while let Some((_, name)) = state.ledger.oldest() {
            let Some(channel) = state.channels.get(&name).cloned() else {
                state.ledger.forget_name(&name);
                continue;
            };
            let mut log = channel.log();
            if log.entries.front().is_none_or(|e| e.arrived_ms >= cutoff) {
                break;
            }
            log.expire(cutoff, &mut state.ledger);
            if log.is_idle() {
                self.remove_channel(state, &channel, &mut log, now);
                removed += 1;
            }
        }
        // Channel states that never held an event and have no subscriber (a subscribe
        // refused after the state was made): first among the dormant.
        while let Some(name) = state.ledger.never_used_dormant() {
            let Some(channel) = state.channels.get(&name).cloned() else {
                state.ledger.forget_name(&name);
                continue;
            };
            self.remove_channel(state, &channel, &mut channel.log(), now);
            removed += 1;
        }
        removed
    }

    /// Channels with subscribers and their client ids, for `/status`; patterns with
    /// subscribers are listed under the pattern (`orders.*`).
    pub fn channels(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.state();
        let (ledger, channels) = (&state.ledger, &state.channels);
        let mut listed: BTreeMap<String, Vec<String>> = ledger
            .live()
            .filter_map(|name| {
                let log = channels.get(name)?.log();
                let clients = log.subscribers.values().map(|s| s.client.to_string());
                Some((name.to_string(), clients.collect()))
            })
            .collect();
        listed.extend(self.pattern_clients(&state));
        listed
    }

    /// Counts kept as they change: reading them costs the same at any number of
    /// channels (`/metrics` is open to anyone).
    pub fn stats(&self) -> BrokerStats {
        let state = self.state();
        BrokerStats {
            channels: state.ledger.live_count(),
            dormant_channels: state.ledger.dormant_count(),
            history_events: state.ledger.events,
            history_bytes: state.ledger.bytes,
            channel_state_bytes: state.ledger.state_bytes,
            subscribers: self.shared.metrics.subscribers.load(Relaxed) as usize,
        }
    }
}

/// The channels with subscribers, for an event to every channel.
pub(super) fn live_channels(state: &State) -> Vec<Arc<Channel>> {
    let (ledger, channels) = (&state.ledger, &state.channels);
    ledger
        .live()
        .filter_map(|name| channels.get(name).cloned())
        .collect()
}

/// Notes that an event to every channel, accepted now, passes the channels without
/// subscribers (if any) by.
pub(super) fn pass_by_dormant(state: &mut State, now: u64) {
    if state.ledger.dormant_count() > 0 {
        // A cursor issued earlier in this same millisecond predates the event too.
        state.broadcast_skipped = (state.ledger.next_stamp(), now + 1);
    }
}
