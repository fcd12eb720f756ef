//! The transport seam over turmoil: gossip datagrams are real encoded chitchat
//! bytes on simulated UDP, relay and HTTP connections are simulated TCP.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sse_cluster::transport::{Datagram, Network, Polled};

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
    /// Simulated sockets have no kernel to ask for a write without a task.
    type Io = Polled<turmoil::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => return (Polled(stream), addr),
                // As tokio's listener does: an accept error is transient, back off.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
