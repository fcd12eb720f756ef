//! Real-socket tests of one node: the HTTP API as users meet it, the stream's wire
//! format (insta snapshots in `snapshots/`), and the binary's command line and
//! signals. Helpers are in `common`.

mod binary;
mod bulk;
mod common;
mod cors;
mod errors;
mod fastpub;
mod headers;
mod lifecycle;
mod limits;
#[path = "../support/metrics.rs"]
#[allow(dead_code)]
mod metrics;
mod metrics_doc;
mod multi;
#[path = "../support/net.rs"]
#[allow(dead_code)]
mod net;
mod patterns;
mod resume;
mod slow;
mod snapshots;
mod stream;
mod targeting;
mod ui;
