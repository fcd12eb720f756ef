//! Several real `sse-cluster` processes on loopback.

mod bulk;
mod common;
mod delivery;
mod dns;
mod drain;
mod half_open;
#[path = "../support/metrics.rs"]
#[allow(dead_code)]
mod metrics;
mod multi;
#[path = "../support/net.rs"]
#[allow(dead_code)]
mod net;
mod netns;
mod partition;
mod patterns;
mod ready;
mod security;
