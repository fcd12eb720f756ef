//! The transport seam over turmoil: gossip datagrams are real encoded chitchat
//! bytes on simulated UDP, relay and HTTP connections are simulated TCP.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use sse_cluster::transport::{Datagram, Network, TrySend};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Simulated UDP and TCP; valid only inside a turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNetwork;

/// A simulated UDP socket.
pub struct SimDatagram(turmoil::net::UdpSocket);

impl Datagram for SimDatagram {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }
}

impl Network for SimNetwork {
    type Datagram = SimDatagram;
    type Stream = turmoil::net::TcpStream;

    async fn bind_datagram(&self, addr: SocketAddr) -> io::Result<SimDatagram> {
        turmoil::net::UdpSocket::bind(addr).await.map(SimDatagram)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}

/// An HTTP listener over a simulated TCP listener, for `axum::serve`.
pub struct SimListener(turmoil::net::TcpListener);

impl SimListener {
    pub async fn bind(addr: SocketAddr) -> io::Result<SimListener> {
        turmoil::net::TcpListener::bind(addr).await.map(SimListener)
    }
}

impl axum::serve::Listener for SimListener {
    type Io = SimStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => return (SimStream(stream), addr),
                // As tokio's listener does: an accept error is transient, back off.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// An accepted simulated connection. It has no kernel socket, so direct writes to a
/// subscriber poll it (see [`TrySend`]).
pub struct SimStream(turmoil::net::TcpStream);

impl TrySend for SimStream {}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
