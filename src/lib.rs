//! sse-cluster: a clustered Server-Sent Events broker.
//!
//! How the parts fit: each module imports only modules of a lower layer (the tests
//! of a module aside), so imports point down.
//!
//! ```text
//!  layer  modules                        imports
//!  5      main (the binary)              node, config, log, clock, transport
//!  4      node                           every part below; hands each its settings
//!  3      config                         the settings of http, cluster, broker, log
//!  2      http, cluster                  broker, transport, leaves (not each other)
//!  1      broker                         leaves
//!         transport                      metrics
//!  0      event, clock, metrics, refusal, log, membership, faults (leaves;
//!         metrics imports refusal)
//! ```
//!
//! - [`event`]: validated input, cursors, and the SSE bytes (encoded once).
//! - [`clock`]: the node's wall time (a fixed start in tests and simulations).
//! - [`metrics`]: the node's counters and their `/metrics` text.
//! - [`refusal`]: the kinds of refused requests, with their status and metric label.
//! - [`log`]: escaping untrusted values for the log, rate-limited warnings, and the
//!   log's settings.
//! - [`membership`]: what the API shows of the cluster (members, readiness), which
//!   `cluster` provides and `http` reads.
//! - [`transport`]: the network seam; the tokio implementation lives here, the
//!   turmoil one in the `sim` crate, and (with `testing`) the conformance suite both
//!   must pass. Counts connections in `metrics`.
//! - [`broker`]: channels, subscribers, replay history and lifecycle; pure state.
//!   It hands each accepted event, typed, to an outlet and takes other nodes'
//!   events typed; it knows nothing of their wire format.
//! - [`http`]: the public API (one axum router, and the subscriber's direct path),
//!   and authorization.
//! - [`cluster`]: gossip membership (chitchat) and the relay between nodes: the
//!   outbox (the broker's outlet), the relay frame format (encoded once per event,
//!   decoded once per frame), and the cluster secret's cryptography.
//! - [`config`]: [`Config`], one settings struct per part (each defined by its part)
//!   and the checks of their bounds.
//! - [`node`]: wires the parts over a given transport and runs until shutdown.
//! - `faults` and `fuzzing`: test-only, not part of the API. Without the `testing`
//!   feature `fuzzing` is not built and `faults` holds only the names of the
//!   simulation's planted bugs (the broker asks about them and is always told no).

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
