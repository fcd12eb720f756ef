//! The transport seam with counters: the simulated network of [`crate::net`], with
//! every relay byte, relay segment and gossip datagram counted, and every relay dial
//! (which node pulled from which address, when) noted.
//!
//! A node dials streams only for the relay, and only nodes ask a node for its relay
//! (clients run on other hosts): so the relay is what `connect` returns and what the
//! listener accepts from a node's address; gossip is all the datagrams. Each end's
//! writes are counted: a turmoil write is one segment.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use sse_cluster::transport::{Datagram, Network, Polled};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Totals over every node, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Relay bytes, both directions (frames, HTTP heads and chunk framing).
    pub relay_bytes: u64,
    /// Relay segments, both directions: one per write of either end.
    pub relay_segments: u64,
    pub gossip_bytes: u64,
    pub gossip_datagrams: u64,
}

impl Counts {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            relay_bytes: self.relay_bytes - earlier.relay_bytes,
            relay_segments: self.relay_segments - earlier.relay_segments,
            gossip_bytes: self.gossip_bytes - earlier.gossip_bytes,
            gossip_datagrams: self.gossip_datagrams - earlier.gossip_datagrams,
        }
    }
}

/// One relay dial: node `from` connected to `to` at `at_ms` of simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    pub from: usize,
    pub to: SocketAddr,
    pub at_ms: u64,
}

/// The counters every node's network adds to (one simulation, one `Seam`).
#[derive(Debug, Default)]
pub(super) struct Seam {
    relay_bytes: AtomicU64,
    relay_segments: AtomicU64,
    gossip_bytes: AtomicU64,
    gossip_datagrams: AtomicU64,
    dials: Mutex<Vec<Dial>>,
}

impl Seam {
    pub(super) fn counts(&self) -> Counts {
        Counts {
            relay_bytes: self.relay_bytes.load(Relaxed),
            relay_segments: self.relay_segments.load(Relaxed),
            gossip_bytes: self.gossip_bytes.load(Relaxed),
            gossip_datagrams: self.gossip_datagrams.load(Relaxed),
        }
    }

    pub(super) fn dials(&self) -> Vec<Dial> {
        self.dials.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn relay(&self, bytes: usize) {
        self.relay_bytes.fetch_add(bytes as u64, Relaxed);
        self.relay_segments.fetch_add(1, Relaxed);
    }
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Node `me`'s network: turmoil's, counted into `seam`.
#[derive(Debug, Clone)]
pub(super) struct CountingNetwork {
    pub(super) me: usize,
    pub(super) seam: Arc<Seam>,
}

pub(super) struct CountingDatagram {
    inner: <crate::net::SimNetwork as Network>::Datagram,
    seam: Arc<Seam>,
}

impl Datagram for CountingDatagram {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let sent = self.inner.send_to(buf, to).await?;
        self.seam.gossip_bytes.fetch_add(sent as u64, Relaxed);
        self.seam.gossip_datagrams.fetch_add(1, Relaxed);
        Ok(sent)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
}

impl Network for CountingNetwork {
    type Datagram = CountingDatagram;
    type Stream = CountingStream;

    async fn bind_datagram(&self, addr: SocketAddr) -> io::Result<CountingDatagram> {
        let inner = crate::net::SimNetwork.bind_datagram(addr).await?;
        Ok(CountingDatagram {
            inner,
            seam: self.seam.clone(),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<CountingStream> {
        self.seam
            .dials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Dial {
                from: self.me,
                to: addr,
                at_ms: now_ms(),
            });
        let inner = crate::net::SimNetwork.connect(addr).await?;
        Ok(CountingStream {
            inner,
            seam: Some(self.seam.clone()),
        })
    }
}

/// An HTTP listener whose connections from `nodes` (relay readers) are counted.
pub(super) struct CountingListener {
    pub(super) inner: turmoil::net::TcpListener,
    pub(super) nodes: Vec<IpAddr>,
    pub(super) seam: Arc<Seam>,
}

impl axum::serve::Listener for CountingListener {
    type Io = Polled<CountingStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((inner, addr)) => {
                    let seam = self.nodes.contains(&addr.ip()).then(|| self.seam.clone());
                    return (Polled(CountingStream { inner, seam }), addr);
                }
                // As `SimListener` does: transient, back off.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection whose writes are counted into the seam, if it has one (a relay
/// connection).
pub(super) struct CountingStream {
    inner: turmoil::net::TcpStream,
    seam: Option<Arc<Seam>>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if let (Some(seam), true) = (&self.seam, written > 0) {
            seam.relay(written);
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
