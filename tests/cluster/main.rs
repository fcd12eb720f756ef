//! Several real `sse-cluster` processes on loopback.

mod common;
mod delivery;
mod half_open;
mod netns;
mod partition;
mod security;
