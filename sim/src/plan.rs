//! What a simulation runs: the [`Plan`] (nodes, clients, fault schedule), its
//! clients' specs, the fixed ports, names and epoch of every run, the timeline every
//! named and random plan follows, and the origins of the nodes. Every other module
//! of the simulation reads these; this one reads none of them.
//!
//! The timeline (simulated seconds): nodes start at 0 and gossip; subscribers open
//! at 3; publishers run from 5 to about 20; faults fall inside that window and
//! everything is healed at [`HEAL`]; subscribers stay until [`LEAVE`] to drain, then
//! leave; the probe runs once the replay age has passed.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use sse_cluster::faults::Bug;

/// The HTTP port every simulated node listens on.
pub const HTTP_PORT: u16 = 8080;
/// The channel the named scenarios use.
pub const CHANNEL: &str = "sim";
/// Gossip port of every simulated node.
pub const GOSSIP_PORT: u16 = 42000;
/// Wall time at the start of every simulation (cursors carry it).
pub const EPOCH_MS: u64 = 1_750_000_000_000;

/// Every fault is healed by now.
pub const HEAL: Duration = Duration::from_secs(21);
/// Subscribers leave by now.
pub const LEAVE: Duration = Duration::from_secs(33);
/// `--replay.age` of the nodes of a plan of the timeline.
pub const REPLAY_AGE: Duration = Duration::from_secs(4);

/// `s` seconds.
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// One fault (or repair) of the schedule. Node sets are node indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Cut every link between the two groups (both ways).
    Partition(Vec<usize>, Vec<usize>),
    /// Cut `from → to` only.
    PartitionOneWay(usize, usize),
    /// Restore every link between nodes (partitions and holds).
    HealAll,
    /// Queue messages between two nodes until released.
    Hold(usize, usize),
    Release(usize, usize),
    /// Kill a node; nothing runs there until `Restart`.
    Crash(usize),
    /// A planned stop (SIGTERM): the node drains, leaves and exits; nothing runs
    /// there until `Restart`. Unlike a crash, it may lose nothing.
    Stop(usize),
    /// Start a node again (a new process: new generation and origin).
    Restart(usize),
    /// Start a node that was not running yet.
    Join(usize),
    /// Start a node again if it is down (no-op otherwise).
    Revive(usize),
    /// Drop this fraction of messages on every node-to-node link.
    Loss(f64),
    /// Maximum latency on every link.
    Latency(Duration),
}

/// Everything a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub nodes: usize,
    /// Nodes not started at time zero (they `Join` later).
    pub late_nodes: Vec<usize>,
    pub subscribers: Vec<SubscriberSpec>,
    pub publishers: Vec<PublisherSpec>,
    pub faults: Vec<(Duration, Fault)>,
    /// When the probe asks every running node for its state.
    pub probe_at: Duration,
    /// Config tweaks on top of the simulation defaults.
    pub subscriber_buffer: usize,
    pub replay_age: Duration,
    /// `--relay.queueEvents` of every node: small, a long cut overflows it.
    pub relay_queue_events: usize,
    /// Segments in flight on a simulated TCP connection before a write blocks
    /// (turmoil's default is 64): small, a slow reader backs up into the broker.
    pub tcp_capacity: usize,
    /// A bug planted in every node (see `sse_cluster::faults`).
    pub planted: Option<Bug>,
    /// `--shutdown.drainTimeout` of every node (zero: a stop does not wait).
    pub drain_timeout: Duration,
    /// Simulated time per step (see [`TICK`] and [`RANDOM_TICK`]).
    pub tick: Duration,
}

/// Time per simulation step of the named scenarios: each shrunk plan reproduces
/// its failure only on the schedule it was found with.
pub const TICK: Duration = Duration::from_millis(2);

/// Time per step of the random search's plans. Turmoil's own work on each step
/// (visiting every link and ticking every host) is most of a run's CPU, so twice
/// the step halves it; links still take 1 to 10 ms (more under a latency fault),
/// rounded up to a step, far below every timeout and signal the checker reads.
pub const RANDOM_TICK: Duration = Duration::from_millis(4);

/// The origin each node runs with now, shared with clients.
#[derive(Debug, Clone, Default)]
pub struct Origins(Rc<RefCell<Vec<u64>>>);

impl Origins {
    pub fn current(&self, node: usize) -> u64 {
        self.0.borrow().get(node).copied().unwrap_or(0)
    }

    /// Node `node` now runs with `origin` (for harnesses that start nodes themselves).
    pub(crate) fn set(&self, node: usize, origin: u64) {
        let mut all = self.0.borrow_mut();
        if all.len() <= node {
            all.resize(node + 1, 0);
        }
        all[node] = origin;
    }
}

pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// A node's origin for one generation: distinct per (seed, node, generation).
pub(crate) fn origin_for(seed: u64, node: usize, generation: u64) -> u64 {
    let mut x = seed ^ ((node as u64 + 1) << 40) ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) | 1
}

/// A subscriber that behaves like a page with one browser `EventSource` per entry
/// of `channels`.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    pub name: String,
    /// Its streams, each on its own connection: a channel, or several channels and
    /// patterns separated by commas on one stream (`c0,g.*`, see [`Stream`]). Each
    /// channel it carries is judged apart: its trace actor is `name@channel`. No
    /// channel may be carried by two of its streams.
    pub channels: Vec<String>,
    /// Nodes in the order it tries them; a reconnect moves to the next.
    pub nodes: Vec<usize>,
    pub start: Duration,
    /// When it closes for good.
    pub stop: Duration,
    /// Pause after each chunk read: a slow client.
    pub read_delay: Duration,
    /// Closes its stream this long after opening and resumes on the next node with
    /// its last id (a load balancer moving it).
    pub hop_every: Option<Duration>,
}

/// A publisher of `{"p":P,"n":k,"a":attempt}` for k in 1..=count, one every
/// `interval`, to one channel.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    pub name: String,
    pub p: u32,
    pub channel: String,
    /// Nodes it posts to, in turn; a retry goes to the next one.
    pub nodes: Vec<usize>,
    pub start: Duration,
    pub count: u32,
    pub interval: Duration,
    /// Sends an idempotency key (`"id":"p{P}-{k}"`) and retries a failed or
    /// unanswered publish with it, on the next node.
    pub retry_with_id: bool,
}
