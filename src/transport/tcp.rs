//! The production transport: tokio TCP.

use std::io;
use std::net::SocketAddr;

use axum::serve::{Listener, ListenerExt};

/// Binds the HTTP listener. Accepted sockets get `TCP_NODELAY`: SSE frames are
/// small and must not wait for Nagle's algorithm.
pub async fn bind_http(addr: SocketAddr) -> io::Result<impl Listener<Addr = SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    }))
}
