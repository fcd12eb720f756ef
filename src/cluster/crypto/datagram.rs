//! Gossip datagrams: XChaCha20-Poly1305 under the gossip key, stamped with the
//! sender's clock (`PROTOCOL.md`, "Gossip datagrams").

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;

use super::{ClusterKey, CryptoError, DATAGRAM_WINDOW_MS, TAG_LEN, VERSION};

const DATAGRAM_NONCE_LEN: usize = 24;
const TIME_LEN: usize = 8;
const DATAGRAM_HEADER_LEN: usize = 1 + DATAGRAM_NONCE_LEN;

impl ClusterKey {
    /// Seals one gossip datagram, stamping it with `now_ms`. `nonce` must be random
    /// (24 bytes make collisions negligible). Returns an empty vector, which every
    /// receiver rejects, only if the payload exceeds the cipher's limit (~256 GiB).
    pub fn seal_datagram(&self, nonce: [u8; 24], now_ms: u64, payload: &[u8]) -> Vec<u8> {
        let mut plaintext = Vec::with_capacity(TIME_LEN + payload.len());
        plaintext.extend_from_slice(&now_ms.to_be_bytes());
        plaintext.extend_from_slice(payload);
        let cipher = XChaCha20Poly1305::new(&self.gossip.into());
        let sealed = cipher.encrypt(
            &nonce.into(),
            Payload {
                msg: &plaintext,
                aad: &[VERSION],
            },
        );
        let Ok(sealed) = sealed else {
            return Vec::new();
        };
        let mut packet = Vec::with_capacity(DATAGRAM_HEADER_LEN + sealed.len());
        packet.push(VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(&sealed);
        packet
    }

    /// Opens a gossip datagram and returns its payload, if it is authentic and was
    /// sealed within [`DATAGRAM_WINDOW_MS`] of `now_ms`.
    pub fn open_datagram(&self, packet: &[u8], now_ms: u64) -> Result<Vec<u8>, CryptoError> {
        let (&version, rest) = packet.split_first().ok_or(CryptoError::BadFormat)?;
        if version != VERSION {
            return Err(CryptoError::WrongVersion);
        }
        if rest.len() < DATAGRAM_NONCE_LEN + TIME_LEN + TAG_LEN {
            return Err(CryptoError::BadFormat);
        }
        let (nonce, sealed) = rest.split_at(DATAGRAM_NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(&self.gossip.into());
        let mut plaintext = cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: sealed,
                    aad: &[VERSION],
                },
            )
            .map_err(|_| CryptoError::Forged)?;
        let sealed_at = read_u64(&plaintext).ok_or(CryptoError::BadFormat)?;
        if sealed_at.abs_diff(now_ms) > DATAGRAM_WINDOW_MS {
            return Err(CryptoError::Stale);
        }
        plaintext.drain(..TIME_LEN);
        Ok(plaintext)
    }
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{key, other_key, NOW};
    use super::*;

    #[test]
    fn datagram_round_trips() {
        for payload in [&b""[..], b"x", &[0xab; 2000]] {
            let packet = key().seal_datagram([3; 24], NOW, payload);
            assert_eq!(packet[0], VERSION);
            assert_eq!(packet.len(), 1 + 24 + 8 + payload.len() + 16);
            assert_eq!(key().open_datagram(&packet, NOW).as_deref(), Ok(payload));
        }
    }

    #[test]
    fn datagram_with_any_byte_flipped_is_refused() {
        let packet = key().seal_datagram([3; 24], NOW, b"gossip digest");
        for index in 0..packet.len() {
            for bit in [0x01, 0x80] {
                let mut altered = packet.clone();
                altered[index] ^= bit;
                let expected = if index == 0 {
                    CryptoError::WrongVersion
                } else {
                    CryptoError::Forged
                };
                assert_eq!(key().open_datagram(&altered, NOW), Err(expected), "{index}");
            }
        }
    }

    #[test]
    fn datagram_truncated_or_extended_is_refused() {
        let packet = key().seal_datagram([3; 24], NOW, b"gossip digest");
        for len in 0..packet.len() {
            assert!(key().open_datagram(&packet[..len], NOW).is_err(), "{len}");
        }
        let mut longer = packet.clone();
        longer.push(0);
        assert_eq!(key().open_datagram(&longer, NOW), Err(CryptoError::Forged));
        assert_eq!(key().open_datagram(&[], NOW), Err(CryptoError::BadFormat));
        assert_eq!(
            key().open_datagram(&packet[..1 + 24 + 8 + 15], NOW),
            Err(CryptoError::BadFormat)
        );
    }

    #[test]
    fn datagram_under_another_key_is_refused() {
        let packet = other_key().seal_datagram([3; 24], NOW, b"gossip digest");
        assert_eq!(key().open_datagram(&packet, NOW), Err(CryptoError::Forged));
    }

    #[test]
    fn datagram_outside_the_window_is_stale() {
        let packet = key().seal_datagram([3; 24], NOW, b"gossip digest");
        let window = DATAGRAM_WINDOW_MS;
        assert!(key().open_datagram(&packet, NOW + window).is_ok());
        assert!(key().open_datagram(&packet, NOW - window).is_ok());
        assert_eq!(
            key().open_datagram(&packet, NOW + window + 1),
            Err(CryptoError::Stale)
        );
        assert_eq!(
            key().open_datagram(&packet, NOW - window - 1),
            Err(CryptoError::Stale)
        );
        let edge = key().seal_datagram([3; 24], u64::MAX, b"");
        assert_eq!(key().open_datagram(&edge, 0), Err(CryptoError::Stale));
    }

    proptest! {
        #[test]
        fn valid_packets_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            nonce in any::<[u8; 24]>(),
            now in any::<u64>(),
        ) {
            let packet = key().seal_datagram(nonce, now, &payload);
            prop_assert_eq!(key().open_datagram(&packet, now), Ok(payload));
        }
    }
}
