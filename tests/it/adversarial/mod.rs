//! Adversarial input over real sockets (issue 7): each attack gets its 4xx, drop or
//! disconnect, and the node keeps serving everyone else. Nodes are real processes of
//! the binary, so a panic shows in their stderr and a crash ends them. Helpers are in
//! `raw`.

mod framing;
mod gossip;
mod limits;
mod raw;
mod relay;
