//! The network seam. HTTP connections come from any [`axum::serve::Listener`]; this
//! module wraps accepted connections so every implementation gets the same
//! accounting and write-stall protection. The tokio implementation is in
//! [`tcp`]; the simulation crate provides a turmoil one.

#[cfg(feature = "testing")]
pub mod conformance;
pub mod tcp;

/// The client IP address of an accepted connection, for per-address limits; `None`
/// where the listener has no such thing (the connection is then not limited).
pub trait PeerIp {
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for SocketAddr {
    fn peer_ip(&self) -> Option<IpAddr> {
        // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
        Some(self.ip().to_canonical())
    }
}

/// The client IP address of a request, as a request extension for the routes that
/// need it (the relay admits only cluster members' addresses without a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteIp(pub IpAddr);

/// A connection that can be written without a task: what its socket takes now, or
/// `WouldBlock`. Appends use it to write an event straight to a waiting subscriber
/// (see [`crate::broker::Sink`]); asking the kernel directly skips the runtime's
/// readiness bookkeeping, about 5% of the node's work per delivery on a large
/// fan-out. A socket that says `WouldBlock` is then written by its task, whose
/// own poll finds the socket full and waits for room as usual.
pub trait TrySend {
    /// `None`: the connection has no such write (a simulated one); it is then
    /// polled once instead, with a waker that does nothing.
    fn try_send(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        let _ = buf;
        None
    }

    /// Caps the kernel's send buffer of the connection at about `bytes` (a subscriber
    /// that stops reading then pins that much, not the megabytes the kernel's
    /// autotuning would grow it to). Nothing where there is no kernel socket.
    fn limit_send_buffer(&self, bytes: usize) {
        let _ = bytes;
    }
}

/// A connection with no kernel socket to ask (a simulated one, say): direct writes
/// to it are polled (see [`TrySend`]).
pub struct Polled<Io>(pub Io);

impl<Io> TrySend for Polled<Io> {}

impl<Io: AsyncRead + Unpin> AsyncRead for Polled<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Polled<Io> {
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

/// A datagram socket, for gossip.
pub trait Datagram: Send + Sync + 'static {
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// The network the cluster code runs over: datagrams for gossip, dialled streams for
/// the relay. Production uses [`tcp::TokioNetwork`]; simulations provide their own.
pub trait Network: Clone + Send + Sync + 'static {
    type Datagram: Datagram;
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn bind_datagram(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Datagram>> + Send;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant, Sleep};

use crate::metrics::Metrics;

/// A listener whose connections are counted and closed when their writes stall.
pub struct Guarded<L> {
    inner: L,
    shared: Arc<ConnShared>,
}

/// What every connection of a listener refers to: one pointer in each, which keeps
/// a connection small (see [`Conn`]).
struct ConnShared {
    metrics: Arc<Metrics>,
    write_stall_timeout: Duration,
}

impl<L: Listener> Guarded<L> {
    pub fn new(inner: L, metrics: Arc<Metrics>, write_stall_timeout: Duration) -> Self {
        Guarded {
            inner,
            shared: Arc::new(ConnShared {
                metrics,
                write_stall_timeout,
            }),
        }
    }
}

impl<L: Listener> Listener for Guarded<L> {
    type Io = Conn<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        self.shared.metrics.open_connections.fetch_add(1, Relaxed);
        let conn = Conn {
            io,
            shared: self.shared.clone(),
            stall: None,
            stalled: false,
            gave_up: false,
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection. A write that stays pending for the stall timeout fails,
/// which ends the connection: a subscriber that stopped reading is dropped instead of
/// holding its socket and stream forever. A connection the kernel gives up on (see
/// [`tcp::HttpSocketOptions`]) is counted as half-open.
///
/// `repr(C)`, the stream first, and small: a direct write locks the connection and
/// reads the stream's descriptor right after, and this keeps the lock and a tokio
/// `TcpStream` within one cache line (see `SharedIo` in the HTTP server).
#[repr(C)]
pub struct Conn<Io> {
    io: Io,
    shared: Arc<ConnShared>,
    /// The stall timer: allocated at a connection's first pending write and kept
    /// (re-armed rather than re-allocated: a busy subscriber's writes can be
    /// pending many times a second).
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` times a pending write now.
    stalled: bool,
    /// Already counted as half-open (reads and writes may both report it).
    gave_up: bool,
}

impl<Io> Conn<Io> {
    /// The stream this connection wraps (for a layout test in the HTTP server).
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &Io {
        &self.io
    }

    /// Looks at a failed read or write (never at successful ones). The kernel ends a
    /// connection that made no progress for its timeout with `ETIMEDOUT` (or the
    /// unreachable error an ICMP message on the way left behind): either nothing
    /// was acknowledged (the client vanished: half-open), or the client kept its
    /// receive window closed (it stopped reading). A write of ours waiting at that
    /// moment means the latter is being timed already: counted as a write stall.
    fn failed(&mut self, error: &io::Error) {
        let gave_up = error.raw_os_error().is_some()
            && matches!(
                error.kind(),
                io::ErrorKind::TimedOut
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            );
        if gave_up && !self.gave_up {
            self.gave_up = true;
            let counter = if self.stalled {
                &self.shared.metrics.write_stall_disconnects
            } else {
                &self.shared.metrics.half_open_disconnects
            };
            counter.fetch_add(1, Relaxed);
        }
    }

    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.shared.write_stall_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            stall.as_mut().reset(deadline);
        }
        ready!(stall.as_mut().poll(cx));
        self.shared
            .metrics
            .write_stall_disconnects
            .fetch_add(1, Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading",
        )))
    }

    fn progress<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                if let Err(error) = &r {
                    self.failed(error);
                }
                self.stalled = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx),
        }
    }
}

impl<Io: TrySend> TrySend for Conn<Io> {
    fn try_send(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        let result = self.io.try_send(buf)?;
        if let Err(error) = &result {
            // The kernel reports a connection's end once: counted here if here.
            self.failed(error);
        }
        Some(result)
    }

    fn limit_send_buffer(&self, bytes: usize) {
        self.io.limit_send_buffer(bytes);
    }
}

impl<Io> Drop for Conn<Io> {
    fn drop(&mut self) {
        self.shared.metrics.open_connections.fetch_sub(1, Relaxed);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Conn<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Err(error)) = &result {
            self.failed(error);
        }
        result
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Conn<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
