//! The integration tests, as one binary (`cargo test --test it`): real nodes on real
//! sockets, from the outside. Each folder is one area; `common` is the harness they
//! share (a node in this process or as a child process, ports, HTTP and `/metrics`
//! helpers).

mod common;

mod adversarial;
mod api;
mod auth;
mod bench_smoke;
mod browser;
mod client;
mod cluster;
mod kube_manifests;
mod nix_module;
mod props;
mod transport_seam;
