//! The production transport: tokio TCP and UDP.

use std::io;
use std::net::SocketAddr;

use axum::serve::{Listener, ListenerExt};

use super::{Datagram, Network};

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

/// Real sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNetwork;

impl Datagram for tokio::net::UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::send_to(self, buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::recv_from(self, buf).await
    }
}

impl Network for TokioNetwork {
    type Datagram = tokio::net::UdpSocket;
    type Stream = tokio::net::TcpStream;

    async fn bind_datagram(&self, addr: SocketAddr) -> io::Result<Self::Datagram> {
        tokio::net::UdpSocket::bind(addr).await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
