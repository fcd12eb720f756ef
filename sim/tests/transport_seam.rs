//! The transport seam's conformance suite (`sse_cluster::transport::conformance`)
//! inside a turmoil simulation; `tests/it/transport_seam.rs` runs the same suite on real
//! tokio sockets.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sse_cluster::transport::conformance::{every_case, Seam};
use sse_cluster_sim::net::{SimListener, SimNetwork};

struct Turmoil;

impl Seam for Turmoil {
    type Net = SimNetwork;
    type Listener = SimListener;

    fn network() -> SimNetwork {
        SimNetwork
    }

    async fn listen(addr: SocketAddr) -> io::Result<SimListener> {
        SimListener::bind(addr).await
    }
}

#[test]
fn the_turmoil_sockets_do_what_the_seam_promises() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        // Few segments in flight, so a reader that never reads stalls the writer
        // soon, as a kernel's buffers would.
        .tcp_capacity(16)
        .build();
    sim.client("seam", async {
        every_case::<Turmoil>().await;
        Ok(())
    });
    sim.run().expect("the simulation");
}
