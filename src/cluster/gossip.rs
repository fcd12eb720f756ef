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
    bound_inflation(bytes)?;
    ChitchatMessage::deserialize(&mut bytes).map_err(|e| format!("malformed: {e}"))
}

/// Most bytes one compressed block of a chitchat delta may inflate to: chitchat cuts
/// its stream into blocks of 16 KiB before compressing them.
const MAX_BLOCK_INFLATED: usize = 16 * 1024;
/// Most bytes the delta of one datagram may inflate to in all. A node's gossip state
/// is a few short keys, so real deltas stay far below this even in large clusters.
pub(crate) const MAX_DATAGRAM_INFLATED: usize = 1 << 20;
/// Most blocks in the delta of one datagram.
const MAX_DATAGRAM_BLOCKS: usize = 64;

/// Refuses a datagram whose delta would inflate past the bounds above, before chitchat
/// sees it: chitchat 0.11 inflates every block of a received delta into one buffer
/// with no total bound, so one forged 64 KiB datagram of small zstd blocks could make
/// a node allocate and fill hundreds of megabytes. Each compressed block is inflated
/// here into a buffer no larger than what is left of the bound, so the work an
/// attacker can cause per datagram is bounded too.
fn bound_inflation(message: &[u8]) -> Result<(), String> {
    const SYN_ACK: u8 = 1;
    const ACK: u8 = 2;
    let mut rest = message;
    let malformed = |what: &str| format!("malformed: {what}");
    // Magic (2 bytes), protocol version, message type; chitchat checks their values.
    let header = take(&mut rest, 4).ok_or_else(|| malformed("short header"))?;
    match header[3] {
        SYN_ACK => skip_digest(&mut rest).ok_or_else(|| malformed("short digest"))?,
        ACK => {}
        // Syn and BadCluster carry no delta.
        _ => return Ok(()),
    }
    let mut inflater = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
    let mut scratch = vec![0u8; MAX_BLOCK_INFLATED];
    let (mut total, mut blocks) = (0usize, 0usize);
    loop {
        let kind = take(&mut rest, 1).ok_or_else(|| malformed("short block"))?[0];
        if kind == 0 {
            return Ok(()); // the end of the block stream
        }
        blocks += 1;
        if blocks > MAX_DATAGRAM_BLOCKS {
            return Err(format!("delta has more than {MAX_DATAGRAM_BLOCKS} blocks"));
        }
        let len = take(&mut rest, 2).ok_or_else(|| malformed("short block"))?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let block = take(&mut rest, len).ok_or_else(|| malformed("short block"))?;
        let room = MAX_BLOCK_INFLATED.min(MAX_DATAGRAM_INFLATED - total);
        total += match kind {
            1 => inflater
                .decompress_to_buffer(block, &mut scratch[..room])
                .map_err(|_| {
                    format!("a compressed block inflates past {room} bytes or is corrupt")
                })?,
            _ => len,
        };
        if total > MAX_DATAGRAM_INFLATED {
            return Err(format!("delta inflates past {MAX_DATAGRAM_INFLATED} bytes"));
        }
    }
}

/// Skips a chitchat digest: a count, then per node its id (name, generation, gossip
/// address) and three 64-bit counters.
fn skip_digest(rest: &mut &[u8]) -> Option<()> {
    let count = take(rest, 2)?;
    for _ in 0..u16::from_le_bytes([count[0], count[1]]) {
        let name_len = take(rest, 2)?;
        take(
            rest,
            u16::from_le_bytes([name_len[0], name_len[1]]) as usize,
        )?;
        take(rest, 8)?; // generation
        let ip_len = match take(rest, 1)?[0] {
            4 => 4,
            6 => 16,
            _ => return None,
        };
        take(rest, ip_len + 2)?; // address and port
        take(rest, 3 * 8)?; // heartbeat, last GC version, max version
    }
    Some(())
}

/// The next `n` bytes of `rest`, consumed.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{
        gossip_ack_of_zero_blocks as ack_of_zero_blocks, gossip_head as head,
        push_gossip_block as push_block,
    };

    #[test]
    fn a_datagram_of_thousands_of_small_zstd_blocks_is_refused_before_inflating() {
        // The attack as found: ~2,000 blocks of ~20 bytes, each inflating to 64 KiB.
        let bomb = ack_of_zero_blocks(2_000, 65_535);
        assert!(bomb.len() <= 65_507, "fits one datagram: {}", bomb.len());
        let reason = decode_datagram(None, &bomb).unwrap_err();
        assert!(reason.contains("inflates past 16384"), "{reason}");
    }

    #[test]
    fn the_total_a_delta_inflates_to_and_its_block_count_are_bounded() {
        let at_bound = ack_of_zero_blocks(64, MAX_BLOCK_INFLATED);
        assert_eq!(bound_inflation(&at_bound), Ok(()));
        let too_many = ack_of_zero_blocks(65, 16);
        let reason = bound_inflation(&too_many).unwrap_err();
        assert!(reason.contains("more than 64 blocks"), "{reason}");
        // Uncompressed blocks count towards the total too.
        let mut mixed = head(2);
        for _ in 0..63 {
            let compressed = zstd::bulk::compress(&[7u8; MAX_BLOCK_INFLATED], 0).unwrap();
            push_block(&mut mixed, 1, &compressed);
        }
        push_block(&mut mixed, 2, &[1u8; MAX_BLOCK_INFLATED + 1]);
        mixed.push(0);
        let reason = bound_inflation(&mixed).unwrap_err();
        assert!(reason.contains("inflates past 1048576"), "{reason}");
    }

    #[test]
    fn a_syn_ack_is_bounded_past_its_digest() {
        let mut message = head(1);
        message.extend(1u16.to_le_bytes()); // one node in the digest
        message.extend(2u16.to_le_bytes());
        message.extend(b"n1");
        message.extend(7u64.to_le_bytes()); // generation
        message.extend([4, 127, 0, 0, 1]);
        message.extend(42_000u16.to_le_bytes());
        message.extend([0u8; 24]);
        let bomb = ack_of_zero_blocks(100, 65_535);
        message.extend(&bomb[4..]);
        let reason = bound_inflation(&message).unwrap_err();
        assert!(reason.contains("inflates past 16384"), "{reason}");
        // A truncated digest is malformed, not a bound.
        assert_eq!(
            bound_inflation(&message[..20]),
            Err("malformed: short digest".to_owned())
        );
    }

    #[test]
    fn a_delta_made_as_chitchat_makes_it_passes() {
        // Text-like state cut into 16 KiB blocks, as chitchat's stream writer does.
        let state: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("key-{i}=http://10.0.{}.{}:8080;", i % 256, i % 7).into_bytes())
            .take(5 * MAX_BLOCK_INFLATED)
            .collect();
        let mut message = head(2);
        for chunk in state.chunks(MAX_BLOCK_INFLATED) {
            let compressed = zstd::bulk::compress(chunk, 0).unwrap();
            push_block(&mut message, 1, &compressed);
        }
        message.push(0);
        assert_eq!(bound_inflation(&message), Ok(()));
        // Messages without a delta are not looked into.
        assert_eq!(bound_inflation(&head(0)), Ok(()));
        assert_eq!(bound_inflation(&head(3)), Ok(()));
    }
}
