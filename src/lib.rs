//! sse-cluster: a clustered Server-Sent Events broker.
//!
//! How the parts fit (imports point down):
//!
//! ```text
//! main ─▶ node ─▶ http ──▶ broker ─▶ event
//!                  │
//!                  └─▶ transport, config, clock, metrics, log (leaves)
//! ```
//!
//! - [`event`]: validated input, cursors, and the SSE bytes (encoded once).
//! - [`broker`]: channels, subscribers, replay history and lifecycle; pure state.
//! - [`http`]: the axum routes of the public API.
//! - [`transport`]: the network seam; the tokio implementation lives here, the
//!   turmoil one in the `sim` crate.
//! - [`node`]: wires the parts over a given transport and runs until shutdown.

pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod metrics;
pub mod node;
pub mod transport;

pub use broker::Broker;
pub use config::Config;
pub use node::Node;
