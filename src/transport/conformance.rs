//! The transport seam's conformance suite: what every implementation of
//! [`Network`] and of the HTTP listener must do alike. The cluster code (gossip,
//! relay) and the HTTP server see only this seam, so a difference between the tokio
//! sockets of production and the turmoil sockets of the simulation is a difference
//! between what the simulation proves and what production does.
//!
//! Test-only (the `testing` feature). Two test binaries run it: `tests/it/transport_seam.rs`
//! on real tokio sockets and `sim/tests/it/transport_seam.rs` inside a turmoil simulation.
//! They cannot be one binary: the simulation's binaries replace `clock_gettime`, so
//! real time does not pass in them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Datagram, Guarded, Network};
use crate::metrics::Metrics;

/// One implementation of the seam: its network and its HTTP listener.
pub trait Seam: 'static {
    type Net: Network;
    type Listener: Listener<Addr = SocketAddr>;
    fn network() -> Self::Net;
    fn listen(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>>;
}

/// Every case below, in turn; a case that does not finish within a minute fails
/// rather than hangs.
pub async fn every_case<S: Seam>() {
    within(
        "datagrams",
        datagrams_carry_bytes_and_the_senders_address::<S>(),
    )
    .await;
    within(
        "streams",
        a_stream_carries_bytes_both_ways_and_ends_with_eof::<S>(),
    )
    .await;
    within("dial nobody", dialling_where_nobody_listens_fails::<S>()).await;
    within(
        "guarded listener",
        the_guarded_listener_counts_connections_and_ends_a_stalled_one::<S>(),
    )
    .await;
}

async fn within(case: &str, run: impl Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .is_err()
    {
        panic!("the {case} case did not finish within a minute");
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback address nothing listens on: one the seam assigned and was let go.
async fn free_address<S: Seam>() -> SocketAddr {
    let listener = S::listen(loopback(0)).await.expect("listen");
    listener.local_addr().expect("local address")
}

/// A datagram arrives whole, with the address it was sent from.
pub async fn datagrams_carry_bytes_and_the_senders_address<S: Seam>() {
    let net = S::network();
    let to = free_address::<S>().await;
    let a = net.bind_datagram(loopback(0)).await.expect("bind a");
    let b = net.bind_datagram(to).await.expect("bind b");
    let sent = a.send_to(b"gossip", to).await.expect("send");
    assert_eq!(sent, 6);
    let mut buf = [0u8; 64];
    let (len, from) = b.recv_from(&mut buf).await.expect("receive");
    assert_eq!(&buf[..len], b"gossip");
    assert_eq!(from.ip(), loopback(0).ip());
    // And back to the address it came from.
    b.send_to(b"ack", from).await.expect("answer");
    let (len, _) = a.recv_from(&mut buf).await.expect("receive the answer");
    assert_eq!(&buf[..len], b"ack");
}

/// A dialled stream carries bytes both ways, and the far end sees its close as EOF.
pub async fn a_stream_carries_bytes_both_ways_and_ends_with_eof<S: Seam>() {
    let mut listener = S::listen(loopback(0)).await.expect("listen");
    let addr = listener.local_addr().expect("local address");
    assert_ne!(addr.port(), 0, "a port was assigned");
    let client = tokio::spawn(async move {
        let mut stream = S::network().connect(addr).await.expect("connect");
        stream.write_all(b"GET /relay").await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read to EOF");
        answer
    });
    let (mut conn, peer) = listener.accept().await;
    assert_eq!(peer.ip(), addr.ip(), "the peer's address, as accepted");
    let mut request = [0u8; 10];
    conn.read_exact(&mut request)
        .await
        .expect("read the request");
    assert_eq!(&request, b"GET /relay");
    conn.write_all(b"frames").await.expect("answer");
    conn.shutdown().await.expect("close");
    drop(conn);
    assert_eq!(client.await.expect("client"), b"frames");
}

/// Dialling a port nobody listens on fails (the relay then backs off and retries).
pub async fn dialling_where_nobody_listens_fails<S: Seam>() {
    let result = S::network().connect(free_address::<S>().await).await;
    assert!(result.is_err(), "a connection to nobody");
}

/// The guarded listener counts each connection while it is open, and closes one
/// whose writes make no progress for the stall timeout (a subscriber that stopped
/// reading), counting it as a write stall.
pub async fn the_guarded_listener_counts_connections_and_ends_a_stalled_one<S: Seam>() {
    let metrics = Arc::new(Metrics::default());
    let stall = Duration::from_millis(500);
    let inner = S::listen(loopback(0)).await.expect("listen");
    let addr = inner.local_addr().expect("local address");
    let mut listener = Guarded::new(inner, metrics.clone(), stall);
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let client = tokio::spawn(async move {
        // Connects, never reads, and keeps the connection until told.
        let stream = S::network().connect(addr).await.expect("connect");
        let _ = hold_rx.await;
        drop(stream);
    });
    let (mut conn, _) = listener.accept().await;
    assert_eq!(metrics.open_connections.load(Relaxed), 1);
    let chunk = vec![b'x'; 16 * 1024];
    let started = tokio::time::Instant::now();
    let error = loop {
        match conn.write(&chunk).await {
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "writes to a reader that never reads kept succeeding"
                );
            }
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    assert!(
        started.elapsed() >= stall,
        "failed before the stall timeout"
    );
    assert_eq!(metrics.write_stall_disconnects.load(Relaxed), 1);
    drop(conn);
    assert_eq!(metrics.open_connections.load(Relaxed), 0);
    let _ = hold_tx.send(());
    client.await.expect("client");
}
