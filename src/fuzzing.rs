//! Entry points for the fuzz targets in `fuzz/`: the decoders of cluster input that
//! are otherwise private to the crate. Not part of the API.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerSettings};
use crate::clock::Clock;
use crate::cluster::crypto::FrameOpener;
use crate::cluster::ClusterSecret;
use crate::event::Origin;

pub use chitchat::ChitchatMessage;

/// A small broker of origin 1 whose clock starts at `now_ms`, to feed relay input to:
/// 16 events per channel, a cursor slack of 16 (`relay_queue_events`), a subscriber
/// buffer of 8.
pub fn small_broker(now_ms: u64) -> Broker {
    Broker::new(
        1,
        Clock::starting_at(now_ms),
        BrokerSettings {
            replay_events: 16,
            replay_age: Duration::from_secs(60),
            subscriber_buffer: 8,
            relay_queue_events: 16,
            replay_max_bytes: 1 << 30,
            max_channels: 100_000,
            ..BrokerSettings::default()
        },
        Arc::new(crate::metrics::Metrics::default()),
    )
}

/// Feeds `chunks`, as a relay puller reads them from `origin`'s response body, through
/// the frame reader and `apply`. `Err` is the reason the puller would hang up.
pub fn relay_body(
    broker: &Broker,
    origin: Origin,
    chunks: &[&[u8]],
    mut opener: Option<&mut FrameOpener>,
    next: &mut u64,
) -> Result<(), String> {
    let mut reader = crate::cluster::wire::FrameReader::default();
    for chunk in chunks {
        reader.extend(chunk);
        crate::cluster::relay::apply_frames(
            broker,
            origin,
            &mut reader,
            opener.as_deref_mut(),
            next,
        )?;
    }
    Ok(())
}

/// Decodes one gossip datagram as the gossip socket does (opened first with a key).
pub fn gossip_datagram(
    secret: Option<&ClusterSecret>,
    packet: &[u8],
) -> Result<ChitchatMessage, String> {
    crate::cluster::gossip::decode_datagram(secret, packet)
}

/// Most bytes the delta of one gossip datagram may inflate to.
pub const GOSSIP_MAX_INFLATED: usize = crate::cluster::gossip::MAX_DATAGRAM_INFLATED;

/// A chitchat message head: magic, protocol version 0, message type (2: an Ack).
pub fn gossip_head(kind: u8) -> Vec<u8> {
    let mut message = 45_139u16.to_le_bytes().to_vec();
    message.extend([0, kind]);
    message
}

/// Appends one block of a chitchat delta: its kind (1 compressed, 2 raw), its length
/// and its bytes.
pub fn push_gossip_block(message: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    message.push(kind);
    message.extend((bytes.len() as u16).to_le_bytes());
    message.extend(bytes);
}

/// An Ack whose delta is `blocks` zstd blocks of `inflated` zero bytes each: with
/// about 2,000 blocks of 64 KiB, the decompression bomb an attack on the gossip
/// port used (one datagram, over 100 MB inflated).
pub fn gossip_ack_of_zero_blocks(blocks: usize, inflated: usize) -> Vec<u8> {
    let compressed = zstd::bulk::compress(&vec![0u8; inflated], 0).expect("compressing");
    let mut message = gossip_head(2);
    for _ in 0..blocks {
        push_gossip_block(&mut message, 1, &compressed);
    }
    message.push(0);
    message
}
