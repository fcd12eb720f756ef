//! Adversarial input over real sockets (issue 7): each attack gets its 4xx, drop or
//! disconnect, and the node keeps serving everyone else. Nodes are real processes of
//! the binary, so a panic shows in their stderr and a crash ends them. Helpers are in
//! `common`.

mod common;
mod framing;
mod gossip;
mod limits;
#[path = "../support/metrics.rs"]
#[allow(dead_code)]
mod metrics;
#[path = "../support/net.rs"]
#[allow(dead_code)]
mod net;
mod relay;
