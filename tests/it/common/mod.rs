//! The harness the test areas share.
//!
//! - `server`: a node in this process on a loopback socket, and a raw HTTP/1.1 SSE
//!   reader that sees the exact bytes;
//! - `node`: the `sse-cluster` binary as a child process: the one harness for every
//!   test that runs it as a node;
//! - `sse`: a stream's events through the client crate's parser;
//! - `net`: free loopback ports and JSON reads; `metrics`: `/metrics` scrapes;
//! - `help`: the options of `sse-cluster start`, read from its `--help`.

pub(crate) mod help;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod node;
pub(crate) mod server;
pub(crate) mod sse;
