//! The cluster: gossip membership (chitchat) and the relay between nodes.
//!
//! Each node advertises its HTTP address and its origin (node + generation) as
//! gossip key-values. A sync loop turns the live member list into `/status` and into
//! one relay puller per live peer origin.
//!
//! - `gossip`: chitchat over the transport, with sealed datagrams when there is a key.
//! - `relay`: the relay's two ends over HTTP: the stream this node serves each peer,
//!   and the puller of each peer's stream that applies what it reads.
//! - `outbox`: this node's accepted events for peers to pull, each encoded once (the
//!   broker hands them over as its [`Outlet`](crate::broker::Outlet)).
//! - `wire`: the relay frame format, in one place: encoding, framing, decoding.
//! - `drain`: a node's last pulls before it stops; `crypto`: the cluster secret's
//!   protocols.

pub mod crypto;
pub(crate) mod drain;
pub(crate) mod gossip;
pub(crate) mod outbox;
pub(crate) mod relay;
mod settings;
pub(crate) mod wire;

pub use crypto::ClusterSecret;
pub use settings::ClusterSettings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::clock::Clock;
use crate::event::Origin;
use crate::log::Untrusted;
use crate::membership::{ClusterView, MemberInfo};
use crate::metrics::Metrics;
use crate::transport::Network;
pub use drain::Drainer;
use drain::{PulledUpTo, KEY_LEAVING};
pub(crate) use outbox::Outbox;
use relay::PeerTarget;
use settings::Joining;

const KEY_HTTP: &str = "http";
const KEY_ORIGIN: &str = "origin";
/// The last sequence this node's origin accepted (hex), kept current by the sync
/// loop. Gossip carries it around a partition (through any node that reaches both
/// sides), so a node can tell what a peer that is gone for good never relayed to it.
const KEY_SEQ: &str = "seq";

/// A running cluster membership; the HTTP layer sees it as a [`ClusterView`].
pub struct Cluster {
    shared: Arc<Shared>,
    chitchat: ChitchatHandle,
    sync: JoinHandle<()>,
    broker: Broker,
    /// How far each peer pulled this node's outbox (the relay server records it).
    pulled: Arc<PulledUpTo>,
    gossip_interval: Duration,
    secret: Option<Arc<ClusterSecret>>,
    /// Bound on the drain before a planned stop.
    drain_timeout: Duration,
}

struct Shared {
    self_member: MemberInfo,
    /// The addresses of every node gossip knows (see [`MemberIps`]).
    member_ips: Arc<MemberIps>,
    members: Mutex<Vec<MemberInfo>>,
    has_peers: AtomicBool,
    /// Node ids of the peers gossip knows (not departed after a drain) that are not
    /// live now: cut off or down, they may still be owed what this node accepted.
    unreachable_peers: Mutex<Vec<String>>,
    ready: AtomicBool,
    /// Node ids of the live peers this node relays with (not leaving).
    live_peers: Mutex<Vec<String>>,
    /// This node is draining before a planned stop: its subscribers will resume on
    /// other nodes, so what a departed peer never relayed here is left for those
    /// nodes to replay (or to signal) instead of a `gap` here (see [`retire`]).
    draining: AtomicBool,
}

impl Shared {
    fn live_peer_ids(&self) -> Vec<String> {
        self.live_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn unreachable_peer_ids(&self) -> Vec<String> {
        self.unreachable_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The IP addresses of the nodes gossip knows (their gossip and HTTP addresses, live
/// or not): without a cluster secret, the relay answers only these.
#[derive(Debug, Default)]
pub(crate) struct MemberIps(Mutex<HashSet<IpAddr>>);

impl MemberIps {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    fn replace(&self, ips: HashSet<IpAddr>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = ips;
    }
}

impl ClusterView for Arc<Shared> {
    fn members(&self) -> Vec<MemberInfo> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if members.is_empty() {
            vec![self.self_member.clone()]
        } else {
            members.clone()
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    fn has_peers(&self) -> bool {
        self.has_peers.load(Relaxed)
    }
}

impl Cluster {
    /// Starts gossip and the relay pullers, as `settings` say. `http` is this node's
    /// HTTP address: the address it binds (gossip binds the same) and the port peers
    /// reach it on. The caller serves the relay on its HTTP listener.
    pub async fn start<N: Network>(
        network: N,
        broker: Broker,
        metrics: Arc<Metrics>,
        clock: Clock,
        settings: &ClusterSettings,
        http: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Cluster> {
        let drain_timeout = settings.drain_timeout;
        let settings = settings.resolve(broker.origin(), clock, http).await?;
        tracing::info!(
            node = %settings.node_id,
            gossip = %settings.gossip_advertise,
            http = %settings.http_advertise,
            seeds = ?settings.seeds,
            "joining the cluster"
        );
        let chitchat_id = ChitchatId::new(
            settings.node_id.clone(),
            settings.generation,
            settings.gossip_advertise,
        );
        // Seeds other than ourselves: with none, this node is a cluster of one and ready.
        let seeds: Vec<String> = settings
            .seeds
            .iter()
            .filter(|s| s.parse::<SocketAddr>().ok() != Some(settings.gossip_advertise))
            .cloned()
            .collect();
        let config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: "sse-cluster".to_owned(),
            gossip_interval: settings.gossip_interval,
            listen_addr: settings.gossip_listen,
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                dead_node_grace_period: Duration::from_secs(60),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = gossip::GossipTransport {
            network: network.clone(),
            secret: settings.secret.clone(),
            metrics: metrics.clone(),
        };
        let chitchat = spawn_chitchat(
            config,
            vec![
                (KEY_HTTP.to_owned(), settings.http_advertise.to_string()),
                (KEY_ORIGIN.to_owned(), format!("{:x}", settings.origin)),
            ],
            &transport,
        )
        .await
        .context("cannot start gossip")?;
        let self_member = MemberInfo {
            id: settings.node_id.clone(),
            http_addr: settings.http_advertise.to_string(),
            alive: true,
        };
        let shared = Arc::new(Shared {
            self_member,
            members: Mutex::new(Vec::new()),
            member_ips: Arc::default(),
            has_peers: AtomicBool::new(false),
            unreachable_peers: Mutex::default(),
            ready: AtomicBool::new(seeds.is_empty()),
            live_peers: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
        });
        let gossip_interval = settings.gossip_interval;
        let secret = settings.secret.clone();
        let sync = tokio::spawn(sync_loop(
            network,
            broker.clone(),
            chitchat.chitchat(),
            chitchat_id,
            shared.clone(),
            settings,
            shutdown,
        ));
        Ok(Cluster {
            shared,
            chitchat,
            sync,
            broker,
            pulled: Arc::default(),
            gossip_interval,
            secret,
            drain_timeout,
        })
    }

    pub fn view(&self) -> Arc<dyn ClusterView> {
        Arc::new(self.shared.clone())
    }

    /// The addresses of the nodes gossip knows, kept current.
    pub(crate) fn member_ips(&self) -> Arc<MemberIps> {
        self.shared.member_ips.clone()
    }

    /// What the relay server records peers' progress in (see [`drain`]).
    pub(crate) fn pulled(&self) -> Arc<PulledUpTo> {
        self.pulled.clone()
    }

    /// The cluster secret, derived from the configured key (the relay server checks
    /// peers with it).
    pub(crate) fn secret(&self) -> Option<Arc<ClusterSecret>> {
        self.secret.clone()
    }

    /// The drain before a planned stop, bounded by the configured drain timeout; run
    /// it before the shutdown flag flips (the pullers and the sync loop keep running
    /// meanwhile).
    pub fn drainer(&self) -> Drainer {
        Drainer {
            shared: self.shared.clone(),
            chitchat: self.chitchat.chitchat(),
            pulled: self.pulled.clone(),
            broker: self.broker.clone(),
            timeout: self.drain_timeout,
            gossip_interval: self.gossip_interval,
        }
    }

    /// Leaves gossip and stops the pullers.
    pub async fn stop(self) {
        self.sync.abort();
        let _ = self.chitchat.shutdown().await;
    }
}

/// Every few hundred milliseconds: publish the member list and keep one relay puller
/// per live peer origin.
async fn sync_loop<N: Network>(
    network: N,
    broker: Broker,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    self_id: ChitchatId,
    shared: Arc<Shared>,
    settings: Joining,
    shutdown: watch::Receiver<bool>,
) {
    let mut pullers: HashMap<Origin, Puller> = HashMap::new();
    // The last sequence each origin announced in gossip.
    let mut announced: HashMap<Origin, u64> = HashMap::new();
    // Origins already retired (see [`retire`]), while gossip still lists them.
    let mut retired: HashSet<Origin> = HashSet::new();
    // What the broker was last told each origin announced, and that it is gone
    // (with what it announced then).
    let mut told_announced: HashMap<Origin, u64> = HashMap::new();
    let mut told_gone: HashMap<Origin, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if *shutdown.borrow() {
            break;
        }
        let (members, live_peers, ended) = {
            let mut chitchat = chitchat.lock().await;
            chitchat
                .self_node_state()
                .set(KEY_SEQ, format!("{:x}", broker.accepted_seq()));
            let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
            let mut members: BTreeMap<String, MemberInfo> = BTreeMap::new();
            // Node id → (generation, target) of its newest live generation.
            let mut live_peers: BTreeMap<String, (u64, PeerTarget)> = BTreeMap::new();
            let mut seen = HashMap::new();
            let mut ips = HashSet::new();
            // Origins whose process ended: their node announced its departure
            // after a drain, or gossip lists a newer generation of the node id.
            let mut ended: HashMap<Origin, Ended> = HashMap::new();
            // Peers (by node id) gossip knows, and whether their newest generation
            // departed after a drain (states come in generation order).
            let mut known: BTreeMap<String, bool> = BTreeMap::new();
            // Each node id's newest generation, and the origins (with what they
            // announced) of every generation gossip still lists that did not leave
            // after a drain: all but the newest ended without one (the node came
            // back as a new process), this node's own earlier ones included.
            let mut generations: BTreeMap<String, u64> = BTreeMap::new();
            let mut origins_of: Vec<(String, u64, Origin, u64)> = Vec::new();
            // Peers' origins that did not leave after a drain, by node id and
            // generation: the newest generation of each is followed (ids wait for it).
            let mut candidates: Vec<(String, u64, Origin)> = Vec::new();
            for (id, state) in chitchat.node_states() {
                ips.insert(id.gossip_advertise_addr.ip());
                let origin = state
                    .get(KEY_ORIGIN)
                    .and_then(|o| u64::from_str_radix(o, 16).ok());
                let seq = state
                    .get(KEY_SEQ)
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                if let (Some(origin), Some(seq)) = (origin, seq) {
                    let known = announced.get(&origin).copied().unwrap_or(0);
                    seen.insert(origin, known.max(seq));
                }
                // A node that drained and announced its departure is gone: nothing
                // it accepted is left to pull, and it is not waited for as a peer.
                let departed = state.get(KEY_LEAVING).is_some();
                if let (Some(origin), Some(seq), false) = (origin, seq, departed) {
                    origins_of.push((id.node_id.to_string(), id.generation_id, origin, seq));
                }
                if let (Some(origin), false) = (origin, departed || id.node_id == self_id.node_id) {
                    candidates.push((id.node_id.to_string(), id.generation_id, origin));
                }
                let newest = generations.entry(id.node_id.to_string()).or_default();
                *newest = (*newest).max(id.generation_id);
                if let (true, Some(origin)) = (departed, origin) {
                    let departed = Ended {
                        node_id: id.node_id.to_string(),
                        generation: id.generation_id,
                        departed: true,
                    };
                    ended.insert(origin, departed);
                }
                let alive = live.contains(id) && !departed;
                if id.node_id != self_id.node_id {
                    known.insert(id.node_id.to_string(), departed);
                }
                let http = state.get(KEY_HTTP).unwrap_or_default().to_owned();
                if let Ok(addr) = http.parse::<SocketAddr>() {
                    ips.insert(addr.ip());
                }
                // A node id seen in several generations: keep the newest.
                let member = MemberInfo {
                    id: id.node_id.to_string(),
                    http_addr: http.clone(),
                    alive,
                };
                members.insert(id.node_id.to_string(), member);
                // Right after a restart gossip can still count the old generation as
                // live; only the newest is pulled from, or the two would take turns
                // retiring each other's puller.
                if alive && id.node_id != self_id.node_id {
                    if let (Some(origin), Ok(http_addr)) = (origin, http.parse::<SocketAddr>()) {
                        let target = PeerTarget {
                            node_id: id.node_id.to_string(),
                            http_addr,
                            origin,
                        };
                        let newest = live_peers
                            .get(&target.node_id)
                            .is_none_or(|(generation, _)| id.generation_id > *generation);
                        if newest {
                            live_peers.insert(target.node_id.clone(), (id.generation_id, target));
                        }
                    }
                }
            }
            // Origins gossip no longer mentions, and nothing pulls from, are forgotten.
            announced.retain(|origin, _| pullers.contains_key(origin));
            // What peers announced they accepted is what this cluster issued: a
            // cursor up to it is genuine even before any of it arrived here.
            // Both take the broker's lock: each round passes on only what changed.
            told_announced.retain(|origin, _| seen.contains_key(origin));
            told_gone.retain(|origin, _| seen.contains_key(origin));
            for (origin, seq) in &seen {
                if told_announced.insert(*origin, *seq) != Some(*seq) {
                    broker.note_announced(*origin, *seq);
                }
            }
            for (node, generation, origin, seq) in origins_of {
                if generations
                    .get(&node)
                    .is_some_and(|newest| generation < *newest)
                {
                    if told_gone.insert(origin, seq) != Some(seq) {
                        broker.note_gone(origin, seq);
                    }
                    ended.entry(origin).or_insert(Ended {
                        node_id: node,
                        generation,
                        departed: false,
                    });
                }
            }
            // Ids wait for every peer gossip lists (live or not: one cut off from
            // this node may be accepting events it lacks) until it restarts, leaves
            // or is forgotten. A new one starts at its process's start, or what
            // this node's first pull of it asks for if later (see `watermark`).
            let first_pull_since = broker
                .started_ms()
                .saturating_sub(relay::FIRST_PULL_MARGIN_MS);
            let followed: Vec<(Origin, u64)> = candidates
                .iter()
                .filter(|(node, generation, _)| generations.get(node) == Some(generation))
                .map(|(_, generation, origin)| (*origin, (*generation).max(first_pull_since)))
                .collect();
            broker.follow_origins(&followed);
            announced.extend(seen);
            shared.member_ips.replace(ips);
            let unreachable = known
                .iter()
                .filter(|(node, departed)| !**departed && !live_peers.contains_key(*node))
                .map(|(node, _)| node.clone())
                .collect();
            *shared
                .unreachable_peers
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = unreachable;
            let live_peers: Vec<(u64, PeerTarget)> = live_peers.into_values().collect();
            (members.into_values().collect::<Vec<_>>(), live_peers, ended)
        };
        shared.has_peers.store(!live_peers.is_empty(), Relaxed);
        *shared.live_peers.lock().unwrap_or_else(|p| p.into_inner()) = live_peers
            .iter()
            .map(|(_, peer)| peer.node_id.clone())
            .collect();
        if !live_peers.is_empty() {
            shared.ready.store(true, Relaxed);
        } else if !shared.ready.load(Relaxed) && started.elapsed() >= settings.ready_timeout {
            tracing::warn!(
                seeds = ?settings.seeds,
                after = ?settings.ready_timeout,
                "no peer seen through the seeds: ready as a cluster of one until one appears"
            );
            shared.ready.store(true, Relaxed);
        }
        *shared.members.lock().unwrap_or_else(|p| p.into_inner()) = members;

        // A departed origin's puller stops now. It drained, so normally its puller
        // applied everything it announced; if its drain timed out, what is missing
        // gets a gap, as for a restart. (The puller of one that restarted without
        // a drain is retired below, once its new process is live.)
        //
        // An origin this node never pulled from at all, gone either way, was cut
        // off from this node all its life: one that drained did so to the peers it
        // knew (seed 4930: restarted behind a partition, it knew only the peer on
        // its side), one that crashed took its events with it (seed 2784: it
        // restarted 490 ms before a partition, before this node had found it).
        // If it started after this node's first pull would have asked for, all it
        // accepted was owed here and is lost to this side: a gap, as for a restart.
        retired.retain(|origin| announced.contains_key(origin));
        for (origin, gone) in ended {
            if let Some(puller) = gone.departed.then(|| pullers.remove(&origin)).flatten() {
                puller.handle.abort();
                tracing::info!(peer = %puller.peer.node_id, "peer left the cluster after a drain");
                retire(
                    &broker,
                    puller.gone(true),
                    announced.get(&origin).copied(),
                    self_id.generation_id,
                    shared.draining.load(Relaxed),
                );
                retired.insert(origin);
            } else if *gone.node_id != *self_id.node_id
                && !pullers.contains_key(&origin)
                && retired.insert(origin)
            {
                tracing::debug!(
                    peer = %Untrusted(&gone.node_id),
                    origin = %format!("{origin:x}"),
                    drained = gone.departed,
                    "a peer process this node never relayed from has ended"
                );
                let never_pulled = Gone {
                    node_id: &gone.node_id,
                    origin,
                    generation: gone.generation,
                    next: 0,
                    departed: gone.departed,
                };
                retire(
                    &broker,
                    never_pulled,
                    announced.get(&origin).copied(),
                    self_id.generation_id,
                    shared.draining.load(Relaxed),
                );
            }
        }

        // One puller per live origin. A puller for an origin that is no longer live
        // keeps retrying (the peer may be cut off) until the same node id comes back
        // with a new origin (it restarted: the old process is gone for good).
        for (generation, peer) in &live_peers {
            let stale: Vec<Origin> = pullers
                .iter()
                .filter(|(o, p)| p.peer.node_id == peer.node_id && **o != peer.origin)
                .map(|(o, _)| *o)
                .collect();
            for origin in stale {
                if let Some(puller) = pullers.remove(&origin) {
                    retired.insert(origin);
                    puller.handle.abort();
                    retire(
                        &broker,
                        puller.gone(false),
                        announced.get(&origin).copied(),
                        self_id.generation_id,
                        shared.draining.load(Relaxed),
                    );
                }
            }
            let running = pullers
                .get(&peer.origin)
                .is_some_and(|p| !p.handle.is_finished() && p.peer.http_addr == peer.http_addr);
            if !running {
                // A new puller for the same origin resumes where the last one stopped.
                let next = match pullers.remove(&peer.origin) {
                    Some(puller) => {
                        puller.handle.abort();
                        puller.next
                    }
                    None => Arc::new(AtomicU64::new(0)),
                };
                tracing::info!(peer = %Untrusted(&peer.node_id), addr = %peer.http_addr, "relaying from peer");
                let handle = tokio::spawn(relay::pull(
                    network.clone(),
                    broker.clone(),
                    peer.clone(),
                    settings.node_id.clone(),
                    settings.client_timeout,
                    settings.secret.clone(),
                    next.clone(),
                    shutdown.clone(),
                ));
                let peer = peer.clone();
                let puller = Puller {
                    peer,
                    generation: *generation,
                    handle,
                    next,
                };
                pullers.insert(puller.peer.origin, puller);
            }
        }
    }
    for (_, puller) in pullers {
        puller.handle.abort();
    }
}

/// A relay puller for one peer origin.
struct Puller {
    peer: PeerTarget,
    /// The peer's generation: the time (ms, its clock) its process started.
    generation: u64,
    handle: JoinHandle<()>,
    /// The next sequence it asks for: everything before it has been applied.
    next: Arc<AtomicU64>,
}

/// A peer's origin is gone for good (its node restarted as a new one): whatever it
/// accepted and announced that never reached this node never will. Rather than a
/// silent hole, every channel gets an `event: gap` (see [`Broker::remote_gap`]).
///
/// What is owed here: everything after what the puller applied; or, if it never
/// applied anything, everything the origin announced, but only when the origin
/// started after what this node's first pull asks for (its start, `generation`
/// in ms, less [`relay::FIRST_PULL_MARGIN_MS`]): all it accepted would have been
/// relayed here. An origin older than that may have announced events accepted
/// before this node existed, which are not owed to its subscribers: saying
/// nothing then keeps a quiet cluster's rolling restart from sending every
/// subscriber a gap. (Nodes that started together are within the margin of each
/// other: one that leaves after accepting events no peer of this node's side of a
/// partition pulled must leave them a gap.)
///
/// A node that is `draining` says nothing of a peer that left after a drain: its
/// subscribers are about to resume on the nodes that stay, which that peer's drain
/// waited for, while a gap here would move their cursors past events those nodes
/// hold (seeds 5054 and 8743: a peer's drain does not wait for
/// a node that announced its own departure, which still serves its streams). Of a
/// peer that crashed it still signals the gap: the nodes that stay may lack those
/// events too, and this node's ids stop waiting for that origin, so without the
/// gap they would vouch for what its streams never got (seed 9022).
fn retire(
    broker: &Broker,
    gone: Gone<'_>,
    announced: Option<u64>,
    generation: u64,
    draining: bool,
) {
    if let Some(upto) = announced {
        broker.note_gone(gone.origin, upto);
    }
    if draining && gone.departed {
        return;
    }
    let first_pull_since = generation.saturating_sub(relay::FIRST_PULL_MARGIN_MS);
    let owed_from = match gone.next {
        0 if gone.generation >= first_pull_since => 1,
        0 => return,
        next => next,
    };
    match announced {
        Some(upto) if upto >= owed_from => {
            tracing::warn!(
                peer = %Untrusted(gone.node_id),
                origin = %format!("{:x}", gone.origin),
                received_upto = owed_from - 1,
                accepted_upto = upto,
                "a peer process that ended never relayed its last events here; signalling a gap"
            );
            broker.remote_gap(gone.origin, upto);
        }
        _ => {}
    }
}

/// A peer origin gossip shows has ended: it left after a drain (`departed`), or
/// its node came back as a newer generation.
struct Ended {
    node_id: String,
    generation: u64,
    departed: bool,
}

/// An origin whose process is gone, as [`retire`] judges what of it is owed.
struct Gone<'a> {
    node_id: &'a str,
    origin: Origin,
    /// Its generation: the time (ms, its clock) its process started.
    generation: u64,
    /// The next sequence this node's puller asked for (0: it applied nothing, or
    /// never pulled from it at all).
    next: u64,
    /// It left after a drain (not replaced by a newer generation of its node).
    departed: bool,
}

impl Puller {
    fn gone(&self, departed: bool) -> Gone<'_> {
        Gone {
            node_id: &self.peer.node_id,
            origin: self.peer.origin,
            generation: self.generation,
            next: self.next.load(Relaxed),
            departed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Next, Resume};

    fn puller(next: u64, generation: u64) -> Puller {
        Puller {
            generation,
            peer: PeerTarget {
                node_id: "peer".into(),
                http_addr: "127.0.0.1:1".parse().unwrap(),
                origin: 0xdead,
            },
            handle: tokio::spawn(async {}),
            next: Arc::new(AtomicU64::new(next)),
        }
    }

    /// This node's generation (start time) in the tests below.
    const OURS: u64 = 100_000;

    /// Whether a subscriber of "c" is sent anything (a gap is the only candidate)
    /// when an origin of generation `theirs` retires, replaced by a newer one.
    fn gap_sent(broker: &Broker, announced: Option<u64>, next: u64, theirs: u64) -> bool {
        gap_sent_while(false, false, broker, announced, next, theirs)
    }

    /// [`gap_sent`] on a node that is `draining` or not, for an origin that
    /// `departed` after a drain or not.
    fn gap_sent_while(
        draining: bool,
        departed: bool,
        broker: &Broker,
        announced: Option<u64>,
        next: u64,
        theirs: u64,
    ) -> bool {
        let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
        sub.take_preamble();
        let puller = puller(next, theirs);
        retire(broker, puller.gone(departed), announced, OURS, draining);
        let waker = std::task::Waker::noop();
        matches!(
            sub.poll_next(&mut std::task::Context::from_waker(waker)),
            std::task::Poll::Ready(Next::Data(_))
        )
    }

    #[tokio::test]
    async fn a_retired_origin_leaves_a_gap_only_for_what_it_announced_and_never_sent() {
        for theirs in [OURS - 1, OURS + 1] {
            let broker = crate::fuzzing::small_broker(1_000_000);
            // Applied up to 2, announced 5: 3..5 are lost.
            assert!(gap_sent(&broker, Some(5), 3, theirs));
            // Everything announced arrived.
            assert!(!gap_sent(&broker, Some(7), 8, theirs));
            // Nothing announced.
            assert!(!gap_sent(&broker, None, 3, theirs));
        }
        let broker = crate::fuzzing::small_broker(1_000_000);
        // Nothing ever applied from an origin older than what this node's first
        // pull asks for: it cannot tell what was accepted before it started, so it
        // says nothing (a quiet cluster's rolling restart).
        let older = OURS - relay::FIRST_PULL_MARGIN_MS - 1;
        assert!(!gap_sent(&broker, Some(500), 0, older));
        // Nothing ever applied from an origin that started with this node (seed
        // 184 of the random search: it accepted one event, cut off from this node,
        // and left after a drain to the one peer on its side): everything it
        // accepted would have been relayed here, so it is owed.
        let broker = crate::fuzzing::small_broker(1_000_000);
        assert!(gap_sent(&broker, Some(1), 0, OURS - 1));
        // Nothing ever applied from an origin younger than this node: all it
        // accepted was owed here.
        assert!(gap_sent(&broker, Some(2), 0, OURS + 1));
        // ... unless it accepted nothing.
        assert!(!gap_sent(&broker, Some(0), 0, OURS + 1));
    }

    /// Seeds 5054 and 8743 of the random search: a node draining before its stop
    /// leaves what a peer that left after a drain never relayed to it to the nodes
    /// its subscribers resume on, which hold it (the peer's drain waited for them).
    /// A gap here would move their cursors past it. Seed 9022: of a peer that
    /// crashed it still sends the gap, since those nodes may lack the events too.
    #[tokio::test]
    async fn a_draining_node_leaves_a_departed_peers_gap_to_the_nodes_that_stay() {
        let gap = |draining, departed, next| {
            let broker = crate::fuzzing::small_broker(1_000_000);
            gap_sent_while(draining, departed, &broker, Some(6), next, OURS + 1)
        };
        assert!(!gap(true, true, 3));
        assert!(!gap(true, true, 0));
        // The same departure seen by a node that stays.
        assert!(gap(false, true, 3));
        // A crashed peer, seen by a draining node.
        assert!(gap(true, false, 3));
        assert!(gap(true, false, 0));
    }
}
