//! sse-cluster: a clustered Server-Sent Events broker.
//!
//! How the parts fit (imports point down):
//!
//! ```text
//! main ─▶ node ─▶ http ─────┐
//!           │               ├─▶ broker ─▶ event
//!           └───▶ cluster ──┘
//!
//!  leaves: transport, config, clock, metrics, refusal, log, membership, faults
//! ```
//!
//! - [`event`]: validated input, cursors, and the SSE bytes (encoded once).
//! - [`broker`]: channels, subscribers, replay history and lifecycle; pure state.
//!   It hands each accepted event, typed, to an outlet and takes other nodes'
//!   events typed; it knows nothing of their wire format.
//! - [`http`]: the public API (one axum router, and the subscriber's direct path).
//! - [`cluster`]: gossip membership (chitchat) and the relay between nodes: the
//!   outbox (the broker's outlet), the relay frame format (encoded once per event,
//!   decoded once per frame), and the cluster secret's cryptography.
//! - [`transport`]: the network seam; the tokio implementation lives here, the
//!   turmoil one in the `sim` crate, and (with `testing`) the conformance suite both
//!   must pass.
//! - [`node`]: wires the parts over a given transport and runs until shutdown.
//! - [`membership`]: what the API shows of the cluster (members, readiness), which
//!   `cluster` provides and `http` reads.
//! - [`log`]: escaping untrusted values for the log, and rate-limited warnings.
//! - [`refusal`]: the kinds of refused requests, with their status and metric label.
//! - `faults` and `fuzzing`: test-only (the `testing` feature), not part of the API.

pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event;
#[doc(hidden)]
pub mod faults;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod refusal;
pub mod transport;

pub use broker::Broker;
pub use config::Config;
pub use node::Node;
