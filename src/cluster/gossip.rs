//! chitchat over the transport seam: chitchat messages are serialised to bytes here,
//! so the same path (encryption included) runs over real UDP and in simulations.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};

use super::ClusterSecret;
use crate::metrics::Metrics;
use crate::transport::{Datagram, Network};

/// Largest gossip datagram read; chitchat keeps its own messages below this.
const MAX_DATAGRAM: usize = 65_535;

pub(crate) struct GossipTransport<N> {
    pub(crate) network: N,
    pub(crate) secret: Option<Arc<ClusterSecret>>,
    pub(crate) metrics: Arc<Metrics>,
}

#[async_trait]
impl<N: Network> Transport for GossipTransport<N> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .network
            .bind_datagram(listen_addr)
            .await
            .with_context(|| format!("cannot bind {listen_addr}/udp for gossip"))?;
        Ok(Box::new(GossipSocket {
            socket,
            secret: self.secret.clone(),
            metrics: self.metrics.clone(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            recv_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct GossipSocket<D> {
    socket: D,
    secret: Option<Arc<ClusterSecret>>,
    metrics: Arc<Metrics>,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
}

/// Errors after which the socket still works (a peer's ICMP unreachable, etc.).
fn is_transient(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::AddrInUse
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::PermissionDenied
    ) || error
        .raw_os_error()
        .is_some_and(|code| code == 1 /* EPERM from a firewall */)
}

#[async_trait]
impl<D: Datagram> Socket for GossipSocket<D> {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.send_buf.clear();
        message.serialize(&mut self.send_buf);
        let sealed;
        let payload: &[u8] = match &self.secret {
            Some(sealer) => {
                sealed = sealer.seal_datagram(&self.send_buf);
                &sealed
            }
            None => &self.send_buf,
        };
        // A peer that is down or cut off is normal in a cluster: never fatal.
        if let Err(error) = self.socket.send_to(payload, to).await {
            tracing::debug!(%to, %error, "gossip send failed");
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(error) if is_transient(&error) => {
                    tracing::debug!(%error, "transient gossip receive error");
                    continue;
                }
                Err(error) => return Err(error).context("gossip socket failed"),
            };
            match decode_datagram(self.secret.as_deref(), &self.recv_buf[..len]) {
                Ok(message) => return Ok((from, message)),
                Err(reason) => {
                    self.metrics.gossip_rejected.fetch_add(1, Relaxed);
                    tracing::debug!(%from, %reason, "dropped gossip datagram");
                }
            }
        }
    }
}

/// Opens (with a key) and decodes one received gossip datagram.
pub(crate) fn decode_datagram(
    secret: Option<&ClusterSecret>,
    packet: &[u8],
) -> Result<ChitchatMessage, String> {
    let opened;
    let mut bytes: &[u8] = match secret {
        Some(secret) => {
            opened = secret.open_datagram(packet).map_err(|e| e.to_string())?;
            &opened
        }
        None => packet,
    };
    ChitchatMessage::deserialize(&mut bytes).map_err(|e| format!("malformed: {e}"))
}
