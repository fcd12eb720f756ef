//! The drain before a planned stop (SIGTERM): the node takes no new publishes, waits
//! until every peer has pulled its outbox to the end (bounded by
//! `--shutdown.drainTimeout`): the live ones, and those gossip knows but cannot
//! reach now (a partition), which nobody else can hand its events to later. Then it
//! says in gossip that it is leaving, so peers stop pulling from it at once instead
//! of waiting out the failure detector.
//!
//! How far a peer has pulled is what the peer itself says: every relay request
//! carries `from=<seq>`, the next sequence the peer asks for, and a puller asks for
//! `from` only after it applied everything before it (see `relay::pull`). That is the
//! one acknowledgement that survives the peer's own buffers: bytes written to our
//! socket, or even read by the peer's kernel, may still be lost if the peer stops
//! before applying them, and a stream that flushed past the last event proves only
//! the first. So while draining, a relay stream that has sent events ends once it
//! reaches the end of the outbox (`relay::serve`); the peer reconnects at once with
//! its new `from`, which is recorded here, and its next stream stays open.
//!
//! The departure is confirmed the same way: a peer that reads `leaving` in gossip
//! retires its puller, which closes its relay stream and does not open another. So
//! the node counts each peer's open relay streams and leaves once no live peer holds
//! one (at least one gossip round after the announcement, at most a few): a peer
//! that missed the announcement would otherwise count the node as live until its
//! failure detector gave up on it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::Chitchat;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Shared, KEY_SEQ};
use crate::broker::Broker;

/// The gossip key a node sets when it leaves after a drain: peers stop counting it
/// as live and retire its puller (nothing is owed: everything was pulled).
pub(crate) const KEY_LEAVING: &str = "leaving";

/// At most this many gossip rounds are waited for the peers to read the departure.
const CONFIRM_ROUNDS: u32 = 6;

/// Entries kept in [`PulledUpTo`]; past it the map starts over (peers re-announce
/// their position with every relay request).
const MAX_PEERS: usize = 4096;

/// How far each peer (by node id) has pulled this node's outbox.
#[derive(Debug, Default)]
pub(crate) struct PulledUpTo {
    peers: Mutex<BTreeMap<String, Progress>>,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Relay streams open to this peer now.
    streams: u32,
    /// Everything up to and including this sequence was applied there (the peer
    /// said so by asking for the next one).
    applied: u64,
    /// The stream handed events up to here to the peer's connection (written, or
    /// about to be written, to its socket): only what a timed-out drain reports.
    sent: u64,
}

impl PulledUpTo {
    /// `node` asked for the events from `from` on: it holds everything before.
    /// The latest request wins (a restarted peer starts over).
    pub(crate) fn record(&self, node: &str, from: u64) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() >= MAX_PEERS && !peers.contains_key(node) {
                peers.clear();
            }
            let applied = from.saturating_sub(1);
            let progress = peers.entry(node.to_owned()).or_default();
            progress.applied = applied;
            progress.sent = applied;
        }
        self.changed.notify_waiters();
    }

    /// A relay stream to `node` opened; it counts as open until the guard drops.
    pub(crate) fn stream_opened(self: &Arc<Self>, node: &str) -> OpenStream {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() >= MAX_PEERS && !peers.contains_key(node) {
                peers.clear();
            }
            peers.entry(node.to_owned()).or_default().streams += 1;
        }
        OpenStream {
            pulled: self.clone(),
            node: node.to_owned(),
        }
    }

    /// The nodes among `nodes` that hold a relay stream open.
    fn pulling<'a>(&self, nodes: &'a [String]) -> Vec<&'a str> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .iter()
            .filter(|node| peers.get(*node).is_some_and(|p| p.streams > 0))
            .map(String::as_str)
            .collect()
    }

    /// The stream to `node` handed the events up to `upto` to its connection.
    pub(crate) fn sent(&self, node: &str, upto: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(progress) = peers.get_mut(node) {
            progress.sent = progress.sent.max(upto);
        }
    }

    /// The nodes among `nodes` that have not applied everything up to `accepted`.
    fn behind(&self, nodes: &[String], accepted: u64) -> Vec<Behind> {
        nodes
            .iter()
            .filter_map(|node| {
                let progress = self.get(node);
                let applied = progress.map_or(0, |p| p.applied);
                (applied < accepted).then(|| Behind {
                    node: node.clone(),
                    progress,
                })
            })
            .collect()
    }

    fn get(&self, node: &str) -> Option<Progress> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
    }
}

/// An open relay stream to one peer (see [`PulledUpTo::stream_opened`]).
#[derive(Debug)]
pub(crate) struct OpenStream {
    pulled: Arc<PulledUpTo>,
    pub(crate) node: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        {
            let mut peers = self.pulled.peers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(progress) = peers.get_mut(&self.node) {
                progress.streams = progress.streams.saturating_sub(1);
            }
        }
        self.pulled.changed.notify_waiters();
    }
}

/// Everything the drain needs, taken from a running [`super::Cluster`].
pub struct Drainer {
    pub(super) shared: Arc<Shared>,
    pub(super) chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    pub(super) pulled: Arc<PulledUpTo>,
    pub(super) broker: Broker,
    pub(super) timeout: Duration,
    pub(super) gossip_interval: Duration,
}

/// A live peer that has not pulled everything yet.
#[derive(Debug)]
struct Behind {
    node: String,
    progress: Option<Progress>,
}

impl Drainer {
    /// Waits until every peer (live, or known but cut off) pulled everything this
    /// node accepted (or the timeout), then announces the departure in gossip and waits until the peers
    /// closed their relay streams (they read it), a few gossip rounds at most.
    /// Returns how long the wait for the peers took.
    pub async fn run(self) -> Duration {
        let started = Instant::now();
        let deadline = started + self.timeout;
        self.shared.draining.store(true, Relaxed);
        let peers = loop {
            // Registered before the check, so a record in between is not missed.
            let changed = self.pulled.changed.notified();
            let accepted = self.broker.accepted_seq();
            let live = self.shared.live_peer_ids();
            let peers = live.len();
            let behind = self.pulled.behind(&live, accepted);
            // A node with seeds that has seen no live peer since it started (it
            // restarted a moment ago) does not know yet who must pull what it
            // accepted: no live peer is not "nobody to wait for".
            let unaware = peers == 0 && accepted > 0 && !self.shared.ready.load(Relaxed);
            // Nor are live peers all there is: gossip knows peers that are cut off
            // by a partition (or down) and may be owed what this node accepted.
            // Peers pull an origin only from the origin itself, so nobody else can
            // hand it to them later: waiting (bounded) lets them come back and
            // pull it.
            let cut_off = self
                .pulled
                .behind(&self.shared.unreachable_peer_ids(), accepted);
            if behind.is_empty() && cut_off.is_empty() && !unaware {
                tracing::info!(
                    peers,
                    accepted,
                    elapsed = ?started.elapsed(),
                    "drained: every peer holds every event this node accepted"
                );
                break peers;
            }
            if Instant::now() >= deadline {
                if unaware {
                    tracing::warn!(
                        accepted,
                        "drain timed out (--shutdown.drainTimeout) before gossip found any peer; leaving anyway"
                    );
                }
                let all = behind.iter().map(|p| (p, true));
                for (peer, reachable) in all.chain(cut_off.iter().map(|p| (p, false))) {
                    let applied = peer.progress.map_or(0, |p| p.applied);
                    tracing::warn!(
                        peer = %crate::log::Untrusted(&peer.node),
                        reachable,
                        applied_upto = applied,
                        sent_upto = peer.progress.map_or(0, |p| p.sent),
                        accepted,
                        left = accepted.saturating_sub(applied),
                        "drain timed out (--shutdown.drainTimeout): this peer had not pulled every event; leaving anyway"
                    );
                }
                break peers;
            }
            // The live-peer list changes without a record (a peer leaves or dies):
            // look again at least every 50 ms.
            let wake = (Instant::now() + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        };
        let waited = started.elapsed();
        if peers > 0 {
            {
                let mut chitchat = self.chitchat.lock().await;
                let state = chitchat.self_node_state();
                state.set(KEY_SEQ, format!("{:x}", self.broker.accepted_seq()));
                state.set(KEY_LEAVING, "1");
            }
            self.confirm_departure().await;
        }
        waited
    }

    /// After the announcement: at least one gossip round, then until no live peer
    /// holds a relay stream open (each closed its own on reading the departure), for
    /// at most [`CONFIRM_ROUNDS`] rounds.
    async fn confirm_departure(&self) {
        let announced = Instant::now();
        let deadline = announced + self.gossip_interval * CONFIRM_ROUNDS;
        tokio::time::sleep(self.gossip_interval).await;
        loop {
            let changed = self.pulled.changed.notified();
            let live = self.shared.live_peer_ids();
            let pulling = self.pulled.pulling(&live);
            if pulling.is_empty() {
                tracing::info!(
                    elapsed = ?announced.elapsed(),
                    "every live peer read the departure"
                );
                return;
            }
            if Instant::now() >= deadline {
                tracing::info!(
                    peers = ?pulling.iter().map(|p| crate::log::Untrusted(p)).collect::<Vec<_>>(),
                    "leaving without these peers' confirmation of the departure (their failure detectors will tell them)"
                );
                return;
            }
            let wake = (Instant::now() + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_everything_before_the_sequence_it_asks_for() {
        let pulled = PulledUpTo::default();
        let applied = |node| pulled.get(node).map(|p| p.applied);
        assert_eq!(applied("a"), None);
        pulled.record("a", 8);
        assert_eq!(applied("a"), Some(7));
        pulled.sent("a", 12);
        assert_eq!(pulled.get("a").map(|p| p.sent), Some(12));
        assert_eq!(applied("a"), Some(7), "sent is not applied");
        // A restarted peer starts over: the latest request wins.
        pulled.record("a", 1);
        assert_eq!(applied("a"), Some(0));
        pulled.record("b", 0);
        assert_eq!(applied("b"), Some(0));
    }

    /// Seed 184 of the random search: a peer cut off before it pulled what the
    /// node accepted is owed it, whoever else is live; one that had pulled it
    /// before the cut is not waited for.
    #[test]
    fn a_peer_is_behind_until_it_applied_everything_accepted() {
        let pulled = PulledUpTo::default();
        pulled.record("live", 2);
        pulled.record("pulled_before_the_cut", 2);
        let nodes = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let behind = |names: &[&str]| -> Vec<String> {
            pulled
                .behind(&nodes(names), 1)
                .into_iter()
                .map(|b| b.node)
                .collect()
        };
        assert!(behind(&["live", "pulled_before_the_cut"]).is_empty());
        assert_eq!(behind(&["never_pulled", "live"]), ["never_pulled"]);
        pulled.record("live", 1);
        assert_eq!(behind(&["live"]), ["live"]);
    }

    #[test]
    fn a_peer_counts_as_pulling_while_one_of_its_streams_is_open() {
        let pulled = Arc::new(PulledUpTo::default());
        let nodes = ["a".to_owned(), "b".to_owned()];
        assert!(pulled.pulling(&nodes).is_empty());
        let first = pulled.stream_opened("a");
        let second = pulled.stream_opened("a");
        // A new request keeps the count (it is the stream's, not the position's).
        pulled.record("a", 5);
        assert_eq!(pulled.pulling(&nodes), ["a"]);
        drop(first);
        assert_eq!(pulled.pulling(&nodes), ["a"], "one stream is still open");
        drop(second);
        assert!(pulled.pulling(&nodes).is_empty());
        assert_eq!(pulled.get("a").map(|p| p.applied), Some(4));
    }
}
