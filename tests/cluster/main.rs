//! Several real `sse-cluster` processes on loopback.

mod common;
mod delivery;
mod partition;
mod security;
