//! The cluster's part of the node's configuration, and what it resolves to when the
//! node joins: names and addresses, and the secret derived from the key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::ClusterSecret;
use crate::clock::Clock;
use crate::event::Origin;

/// How this node takes part in the cluster: the cluster part of the node's
/// [`crate::Config`].
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// UDP port for gossip (`--gossip.port`).
    pub gossip_port: u16,
    /// Seed hosts (`host:port`) used to join a cluster (`--gossip.hosts`).
    pub seeds: Vec<String>,
    /// With seeds, ready once a live peer is seen or after this long without one: a
    /// single replica seeded by its own headless service must not stay unready.
    pub ready_timeout: Duration,
    /// Address other nodes use to reach this one (gossip and HTTP/relay); `None` is
    /// loopback (the binary resolves it before: the local address that routes to the
    /// first seed).
    pub advertise: Option<IpAddr>,
    /// This node's name in the cluster; unique per node. `None`: a name made from the
    /// origin (the binary sets `<hostname>@<advertise address>:<http port>`).
    pub node_id: Option<String>,
    /// Shared cluster secret; `None` leaves cluster traffic open.
    pub secret_key: Option<String>,
    /// Bound on calls this node makes to its peers: relay connects and a silent
    /// relay stream (`--http.client.timeout`).
    pub client_timeout: Duration,
    /// On SIGTERM, how long a clustered node waits for its live peers to pull every
    /// event it accepted before it leaves anyway, and logs what was left
    /// (`--shutdown.drainTimeout`).
    pub drain_timeout: Duration,
    /// Shortest time between two writes of events on one relay stream: events
    /// accepted meanwhile leave together in the next write, which costs the peer one
    /// wake-up and one read for all of them (`--relay.batchInterval`; zero: each event
    /// as soon as it is accepted). A stream quiet for this long writes at once: only
    /// a peer stream busier than one write per interval waits.
    pub relay_batch_interval: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            gossip_port: 42000,
            seeds: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            advertise: None,
            node_id: None,
            secret_key: None,
            client_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            relay_batch_interval: Duration::from_millis(2),
        }
    }
}

/// Interval between gossip rounds.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(500);

/// What the cluster runs with: its settings resolved for this process.
pub(super) struct Joining {
    pub(super) node_id: String,
    /// Increases with every restart of the same node id.
    pub(super) generation: u64,
    pub(super) origin: Origin,
    pub(super) gossip_listen: SocketAddr,
    pub(super) gossip_advertise: SocketAddr,
    pub(super) http_advertise: SocketAddr,
    pub(super) seeds: Vec<String>,
    pub(super) ready_timeout: Duration,
    pub(super) gossip_interval: Duration,
    pub(super) client_timeout: Duration,
    pub(super) secret: Option<Arc<ClusterSecret>>,
}

impl ClusterSettings {
    /// What the cluster runs with as `origin`, its HTTP listener at `http` (the
    /// address it binds, gossip binds the same; the port peers reach it on). Derives
    /// the secret from the key (slow by design: off the runtime's threads).
    pub(super) async fn resolve(
        &self,
        origin: Origin,
        clock: Clock,
        http: SocketAddr,
    ) -> anyhow::Result<Joining> {
        let secret = match self.secret_key.clone() {
            Some(key) => {
                let derive = move || ClusterSecret::new(&key, clock, origin);
                Some(Arc::new(tokio::task::spawn_blocking(derive).await?))
            }
            None => None,
        };
        let advertise = self.advertise.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let named = self.node_id.clone();
        Ok(Joining {
            node_id: named.unwrap_or_else(|| format!("node-{origin:x}")),
            generation: clock.now_ms(),
            origin,
            gossip_listen: SocketAddr::new(http.ip(), self.gossip_port),
            gossip_advertise: SocketAddr::new(advertise, self.gossip_port),
            http_advertise: SocketAddr::new(advertise, http.port()),
            seeds: self.seeds.clone(),
            ready_timeout: self.ready_timeout,
            gossip_interval: GOSSIP_INTERVAL,
            client_timeout: self.client_timeout,
            secret,
        })
    }
}
