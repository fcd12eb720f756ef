//! Real-socket tests of one node: the HTTP API as users meet it, the stream's wire
//! format (insta snapshots in `snapshots/`), and the binary's command line and
//! signals. Helpers are in
//! `crate::common::server`.

mod binary;
mod bulk;
mod cors;
mod errors;
mod fastpub;
mod headers;
mod lifecycle;
mod limits;
mod metrics_doc;
mod multi;
mod patterns;
mod resume;
mod slow;
mod snapshots;
mod stream;
mod targeting;
mod ui;
