//! Relay frames: ChaCha20-Poly1305 under one stream's session key, frame `n` with
//! nonce `n`, so the stream opens only whole and in order (`PROTOCOL.md`, "Relay
//! frames").

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;

use super::{CryptoError, Key, TAG_LEN};

/// Seals the frames of one relay stream, frame `n` with nonce `n`.
pub struct FrameSealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl fmt::Debug for FrameSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSealer")
            .field("frames", &self.counter)
            .finish_non_exhaustive()
    }
}

impl FrameSealer {
    /// A sealer of a new stream under `session` (from the handshake).
    pub(super) fn new(session: Key) -> FrameSealer {
        FrameSealer {
            cipher: ChaCha20Poly1305::new(&session.into()),
            counter: 0,
        }
    }

    /// Seals the next frame (ciphertext and 16-byte tag; the nonce is implicit). Returns
    /// an empty vector, which the opener rejects, once 2^64 - 1 frames have been sealed
    /// or for a frame over the cipher's limit (~256 GiB): the stream must then restart.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        if self.counter == u64::MAX {
            return Vec::new();
        }
        let sealed = self
            .cipher
            .encrypt(&frame_nonce(self.counter).into(), plaintext);
        match sealed {
            Ok(frame) => {
                self.counter += 1;
                frame
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Opens the frames of one relay stream, strictly in order. The first failure breaks it.
pub struct FrameOpener {
    cipher: ChaCha20Poly1305,
    counter: u64,
    broken: bool,
}

impl fmt::Debug for FrameOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameOpener")
            .field("frames", &self.counter)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl FrameOpener {
    /// An opener of a new stream under `session` (from the handshake).
    pub(super) fn new(session: Key) -> FrameOpener {
        FrameOpener {
            cipher: ChaCha20Poly1305::new(&session.into()),
            counter: 0,
            broken: false,
        }
    }

    /// Opens the next frame. Any error is final: every later call returns
    /// [`CryptoError::Broken`].
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.broken {
            return Err(CryptoError::Broken);
        }
        let opened = self.open_next(frame);
        match opened {
            Ok(_) => self.counter += 1,
            Err(_) => self.broken = true,
        }
        opened
    }

    fn open_next(&self, frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        if frame.len() < TAG_LEN {
            return Err(CryptoError::BadFormat);
        }
        self.cipher
            .decrypt(&frame_nonce(self.counter).into(), frame)
            .map_err(|_| CryptoError::Forged)
    }
}

/// Frame `n` uses the 96-bit nonce `0u32 || n` (big endian).
fn frame_nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::super::testing::{handshake, key};
    use super::*;

    #[test]
    fn handshake_agrees_on_the_session_and_frames_round_trip() {
        let (mut sealer, mut opener) = handshake(key(), key()).expect("handshake");
        for n in 0..100u32 {
            let payload = format!("event {n}");
            let frame = sealer.seal(payload.as_bytes());
            assert_eq!(opener.open(&frame), Ok(payload.into_bytes()));
        }
        assert_eq!(opener.open(&sealer.seal(b"")), Ok(Vec::new()));
    }

    #[test]
    fn reordered_frames_fail() {
        let (mut sealer, mut opener) = handshake(key(), key()).expect("handshake");
        let first = sealer.seal(b"one");
        let second = sealer.seal(b"two");
        assert_eq!(opener.open(&second), Err(CryptoError::Forged));
        assert_eq!(opener.open(&first), Err(CryptoError::Broken));
    }

    #[test]
    fn replayed_frame_fails() {
        let (mut sealer, mut opener) = handshake(key(), key()).expect("handshake");
        let first = sealer.seal(b"one");
        assert!(opener.open(&first).is_ok());
        assert_eq!(opener.open(&first), Err(CryptoError::Forged));
    }

    #[test]
    fn dropped_frame_breaks_the_stream() {
        let (mut sealer, mut opener) = handshake(key(), key()).expect("handshake");
        let first = sealer.seal(b"one");
        let _dropped = sealer.seal(b"two");
        let third = sealer.seal(b"three");
        assert!(opener.open(&first).is_ok());
        assert_eq!(opener.open(&third), Err(CryptoError::Forged));
        let fourth = sealer.seal(b"four");
        assert_eq!(opener.open(&fourth), Err(CryptoError::Broken));
    }

    #[test]
    fn altered_truncated_or_injected_frames_fail() {
        let (mut sealer, _) = handshake(key(), key()).expect("handshake");
        let frame = sealer.seal(b"an event");
        for index in 0..frame.len() {
            let (_, mut opener) = handshake(key(), key()).expect("handshake");
            let mut altered = frame.clone();
            altered[index] ^= 0x01;
            assert_eq!(opener.open(&altered), Err(CryptoError::Forged), "{index}");
        }
        for len in 0..frame.len() {
            let (_, mut opener) = handshake(key(), key()).expect("handshake");
            assert!(opener.open(&frame[..len]).is_err(), "{len}");
        }
        let (_, mut opener) = handshake(key(), key()).expect("handshake");
        assert_eq!(opener.open(&[0; 40]), Err(CryptoError::Forged));
        let (_, mut opener) = handshake(key(), key()).expect("handshake");
        assert_eq!(opener.open(&[0; 15]), Err(CryptoError::BadFormat));
        let (_, mut opener) = handshake(key(), key()).expect("handshake");
        assert!(opener.open(&frame).is_ok());
    }

    #[test]
    fn exhausted_counters_fail_closed() {
        let (mut sealer, mut opener) = handshake(key(), key()).expect("handshake");
        sealer.counter = u64::MAX;
        assert!(sealer.seal(b"x").is_empty());
        opener.counter = u64::MAX;
        assert_eq!(opener.open(&[0; 20]), Err(CryptoError::Exhausted));
    }
}
