//! What a node shows of its cluster: the member list and whether it may be sent
//! traffic. `cluster` provides it (or `node`, for a node alone) and `http` reads it,
//! so neither of the two imports the other.

use serde::Serialize;

/// One member of the cluster as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub http_addr: String,
    pub alive: bool,
}

/// What the HTTP layer needs to know about the cluster.
pub trait ClusterView: Send + Sync + 'static {
    fn members(&self) -> Vec<MemberInfo>;
    /// Whether the node has joined and may be sent traffic.
    fn ready(&self) -> bool;
    /// Whether other live nodes exist (a client may be connected to one of them).
    fn has_peers(&self) -> bool;
}
