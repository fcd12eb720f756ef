//! The production transport: tokio TCP and UDP.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt};
use socket2::{SockRef, TcpKeepalive};

use super::{Datagram, Network, TrySend};

/// How accepted HTTP sockets find out that their client is gone when nothing
/// tells them: the client's host lost power or its network, or a NAT on the way
/// dropped the mapping. Without these the kernel keeps such a connection (and its
/// subscriber) for about 15 minutes of retransmissions, because a stream's small
/// keep-alive comments never fill the send buffer and so never stall a write.
#[derive(Debug, Clone, Copy)]
pub struct HttpSocketOptions {
    /// `TCP_USER_TIMEOUT` (Linux): the kernel aborts a connection whose sent data
    /// stays unacknowledged this long. The node uses `--http.server.writeTimeout`.
    pub unacknowledged_timeout: Duration,
    /// The stream keep-alive interval (`--http.server.keepAlive`); TCP keep-alive
    /// probes are derived from it (see [`HttpSocketOptions::tcp_keepalive`]).
    pub keep_alive: Duration,
}

impl HttpSocketOptions {
    /// TCP keep-alive for connections with nothing to send (an idle HTTP connection,
    /// one waiting for a request body): the first probe after `keep_alive` of
    /// silence, then one every third of it (at least a second), at most 3 unanswered
    /// (with `TCP_USER_TIMEOUT` set, Linux gives up once the peer has been silent for
    /// that long instead of counting probes).
    pub fn tcp_keepalive(&self) -> TcpKeepalive {
        // The kernel counts these in whole seconds, at least 1.
        let idle = self.keep_alive.max(Duration::from_secs(1));
        let interval = (self.keep_alive / 3).max(Duration::from_secs(1));
        let keepalive = TcpKeepalive::new().with_time(idle).with_interval(interval);
        #[cfg(not(windows))]
        let keepalive = keepalive.with_retries(3);
        keepalive
    }

    fn apply(&self, stream: &tokio::net::TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let socket = SockRef::from(stream);
        if let Err(error) = socket.set_tcp_keepalive(&self.tcp_keepalive()) {
            tracing::debug!(%error, "could not set TCP keep-alive");
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(error) = socket.set_tcp_user_timeout(Some(self.unacknowledged_timeout)) {
            tracing::debug!(%error, "could not set TCP_USER_TIMEOUT");
        }
    }
}

/// Binds the HTTP listener. Accepted sockets get `TCP_NODELAY` (SSE frames are
/// small and must not wait for Nagle's algorithm) and the dead-peer detection of
/// `options`.
pub async fn bind_http(
    addr: SocketAddr,
    options: HttpSocketOptions,
) -> io::Result<impl Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(listener.tap_io(move |stream| options.apply(stream)))
}

impl TrySend for tokio::net::TcpStream {
    /// One non-blocking `send(2)`: the socket is already non-blocking.
    fn try_send(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        Some(SockRef::from(&*self).send(buf))
    }

    fn limit_send_buffer(&self, bytes: usize) {
        if let Err(error) = SockRef::from(self).set_send_buffer_size(bytes) {
            tracing::debug!(%error, "could not set SO_SNDBUF");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_probes_follow_the_stream_keep_alive() {
        let options = |keep_alive| HttpSocketOptions {
            unacknowledged_timeout: Duration::from_secs(30),
            keep_alive,
        };
        // Settings are write-only in socket2; check them on a real socket.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        for (keep_alive, idle, interval) in [
            (Duration::from_secs(15), 15, 5),
            (Duration::from_millis(500), 1, 1),
            (Duration::from_secs(1), 1, 1),
        ] {
            socket
                .set_tcp_keepalive(&options(keep_alive).tcp_keepalive())
                .expect("set keepalive");
            assert!(socket.keepalive().expect("SO_KEEPALIVE"));
            assert_eq!(socket.tcp_keepalive_time().expect("idle").as_secs(), idle);
            assert_eq!(
                socket.tcp_keepalive_interval().expect("interval").as_secs(),
                interval
            );
            assert_eq!(socket.tcp_keepalive_retries().expect("retries"), 3);
        }
    }
}
