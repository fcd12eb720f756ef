//! Several real `sse-cluster` processes on loopback.

mod bulk;
mod delivery;
mod dns;
mod drain;
mod half_open;
mod multi;
mod netns;
mod partition;
mod patterns;
mod ready;
mod security;
