//! Entry points for the fuzz targets in `fuzz/`: the decoders of cluster input that
//! are otherwise private to the crate. Not part of the API.

use crate::broker::Broker;
use crate::cluster::crypto::FrameOpener;
use crate::cluster::ClusterSecret;
use crate::event::Origin;

pub use chitchat::ChitchatMessage;

/// Feeds `chunks`, as a relay puller reads them from `origin`'s response body, through
/// the frame reader and `apply`. `Err` is the reason the puller would hang up.
pub fn relay_body(
    broker: &Broker,
    origin: Origin,
    chunks: &[&[u8]],
    mut opener: Option<&mut FrameOpener>,
    next: &mut u64,
) -> Result<(), String> {
    let mut reader = crate::cluster::relay::FrameReader::default();
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
