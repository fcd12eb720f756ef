//! Node-wide bookkeeping of the channel logs, for the node's limits: the bytes of
//! replay history (`--replay.maxBytes`) and which channel states to give up first
//! (`--channels.max`).
//!
//! Every log mutation happens while the broker's `State` lock is held, and the
//! ledger lives in that state, so the log methods that add or drop entries or
//! subscribers keep it exact. It holds no entries: an evicted event is freed at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Bytes a channel state counts against `--replay.maxBytes` besides its events: the
/// channel and its log, their map and index entries, and the name (kept in each). A
/// measured estimate (about 1 KiB per state at 100,000 dormant channels, see the
/// README's Security section), so that a node made to keep many channels with
/// little history in each stays inside the bound too.
pub(crate) fn channel_cost(name: &str) -> usize {
    1024 + 4 * name.len()
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Stamp of the last appended event; stamps order every append on this node.
    last_stamp: u64,
    /// Bytes of every retained event, as [`super::Entry::cost`] counts them.
    pub(crate) bytes: usize,
    /// Bytes of every channel state, as [`channel_cost`] counts them.
    pub(crate) state_bytes: usize,
    /// Retained events, across channels.
    pub(crate) events: usize,
    /// Channels with at least one subscriber: what a publish to every channel visits,
    /// so its cost does not grow with the channels kept only for their history.
    live: BTreeSet<Arc<str>>,
    /// Each channel with history, keyed by the stamp of its oldest retained event:
    /// the first key is the node's oldest event. One key per channel, so this stays
    /// as large as the number of channels however busy some of them are.
    fronts: BTreeMap<u64, Arc<str>>,
    /// Channels without subscribers, by the stamp of their newest event (0: none):
    /// the first is the dormant channel that has been quiet longest.
    dormant: BTreeSet<(u64, Arc<str>)>,
}

impl Ledger {
    /// What `--replay.maxBytes` bounds: history and channel states.
    pub(crate) fn counted(&self) -> usize {
        self.bytes + self.state_bytes
    }

    /// The stamp for the next appended event.
    pub(crate) fn next_stamp(&mut self) -> u64 {
        self.last_stamp += 1;
        self.last_stamp
    }

    /// The stamp of the newest event appended on this node.
    pub(crate) fn last_stamp(&self) -> u64 {
        self.last_stamp
    }

    /// The channel holding the node's oldest retained event, and that event's stamp.
    pub(crate) fn oldest(&self) -> Option<(u64, Arc<str>)> {
        self.fronts
            .first_key_value()
            .map(|(stamp, name)| (*stamp, name.clone()))
    }

    /// A dormant channel that never held an event, if there is one.
    pub(crate) fn never_used_dormant(&self) -> Option<Arc<str>> {
        self.dormant
            .first()
            .filter(|(newest, _)| *newest == 0)
            .map(|(_, name)| name.clone())
    }

    /// The dormant channel whose newest event is oldest.
    pub(crate) fn quietest_dormant(&self) -> Option<Arc<str>> {
        self.dormant.first().map(|(_, name)| name.clone())
    }

    pub(crate) fn set_front(&mut self, stamp: u64, name: &Arc<str>) {
        self.fronts.insert(stamp, name.clone());
    }

    pub(crate) fn clear_front(&mut self, stamp: u64) {
        self.fronts.remove(&stamp);
    }

    pub(crate) fn set_dormant(&mut self, newest: u64, name: &Arc<str>) {
        self.dormant.insert((newest, name.clone()));
    }

    pub(crate) fn set_live(&mut self, name: &Arc<str>) {
        self.live.insert(name.clone());
    }

    pub(crate) fn clear_live(&mut self, name: &str) {
        self.live.remove(name);
    }

    /// Names of the channels with subscribers.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.live.iter()
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn dormant_count(&self) -> usize {
        self.dormant.len()
    }

    pub(crate) fn clear_dormant(&mut self, newest: u64, name: &Arc<str>) {
        self.dormant.remove(&(newest, name.clone()));
    }

    /// Drops an index entry that names no channel (never expected; keeps a bug from
    /// turning into an endless loop).
    pub(crate) fn forget_name(&mut self, name: &str) {
        self.fronts.retain(|_, n| &**n != name);
        self.dormant.retain(|(_, n)| &**n != name);
        self.live.remove(name);
    }

    #[cfg(test)]
    pub(crate) fn indexed(&self) -> (usize, usize) {
        (self.fronts.len(), self.dormant.len())
    }
}
