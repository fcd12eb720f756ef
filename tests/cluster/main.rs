//! Several real `sse-cluster` processes on loopback.

mod common;
mod delivery;
mod half_open;
#[path = "../support/metrics.rs"]
#[allow(dead_code)]
mod metrics;
mod netns;
mod partition;
mod security;
