//! The transport seam's conformance suite (`sse_cluster::transport::conformance`) on
//! real tokio sockets; `sim/tests/transport_seam.rs` runs the same suite in turmoil.

use std::io;
use std::net::SocketAddr;

use sse_cluster::transport::conformance::{every_case, Seam};
use sse_cluster::transport::tcp::TokioNetwork;

struct Tokio;

impl Seam for Tokio {
    type Net = TokioNetwork;
    type Listener = tokio::net::TcpListener;

    fn network() -> TokioNetwork {
        TokioNetwork
    }

    async fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }
}

#[tokio::test]
async fn the_tokio_sockets_do_what_the_seam_promises() {
    every_case::<Tokio>().await;
}
