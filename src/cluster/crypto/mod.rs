//! Cluster cryptography: one shared secret authenticates and encrypts the traffic
//! between nodes. The formats, their derivations and what they do and do not protect
//! are specified in `PROTOCOL.md` at the repository root ("Sealed formats"); each file
//! here is one protocol of it:
//!
//! - `keys.rs`: deriving the cluster keys from the secret (Argon2id, then HKDF).
//! - `datagram.rs`: sealing and opening gossip datagrams.
//! - `handshake.rs`: the relay request and response headers, and the session key.
//! - `frames.rs`: sealing and opening the frames of one relay stream.
//! - `replay.rs`: the guard that accepts each relay request nonce once.
//! - `secret.rs`: [`ClusterSecret`], the keys bound to the node's clock, its nonces and
//!   its replay guard: what the gossip socket and the relay use.
//!
//! All but `secret.rs` are pure functions over bytes: no sockets, no clock, no OS
//! randomness. Callers pass `now_ms` and every nonce, so a simulation stays a function
//! of its seed.

use std::fmt;

mod datagram;
mod encoding;
mod frames;
mod handshake;
mod keys;
mod replay;
mod secret;

pub use frames::{FrameOpener, FrameSealer};
pub use handshake::RelayAccept;
pub use keys::ClusterKey;
pub use replay::ReplayGuard;
pub use secret::ClusterSecret;
pub(crate) use secret::RelayAnswer;

/// Wire version of both the gossip packet and the relay headers.
pub const VERSION: u8 = 1;
/// How far a datagram's sealed time may be from the receiver's clock, either way.
pub const DATAGRAM_WINDOW_MS: u64 = 60_000;
/// How far a relay request's time may be from the server's clock, either way.
pub const RELAY_WINDOW_MS: u64 = 30_000;
/// Default bound on the number of request nonces a [`ReplayGuard`] remembers.
pub const REPLAY_GUARD_CAPACITY: usize = 4096;

/// Length of a Poly1305 tag, appended to every sealed datagram and frame.
const TAG_LEN: usize = 16;

/// A 256-bit key.
type Key = [u8; 32];

/// Why a packet, header or frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// Too short, too long, or not in the expected syntax.
    BadFormat,
    /// Well formed, but of a version this node does not speak.
    WrongVersion,
    /// Authentication failed: altered, truncated, injected, or sealed with another key.
    Forged,
    /// Authentic, but its time is outside the accepted window.
    Stale,
    /// Authentic and fresh, but its nonce was already accepted.
    Replayed,
    /// An earlier frame of this stream failed; the session must be re-established.
    Broken,
    /// The frame counter is used up (after 2^64 - 1 frames); reconnect.
    Exhausted,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::BadFormat => "malformed cluster message",
            CryptoError::WrongVersion => "unsupported cluster protocol version",
            CryptoError::Forged => "cluster message failed authentication",
            CryptoError::Stale => "cluster message outside the accepted time window",
            CryptoError::Replayed => "cluster message replayed",
            CryptoError::Broken => "relay stream broken by an earlier bad frame",
            CryptoError::Exhausted => "relay stream frame counter exhausted",
        })
    }
}

impl std::error::Error for CryptoError {}

/// Keys and a handshake shared by the tests of every protocol (and of the relay's
/// sealed streams).
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::OnceLock;

    use super::{ClusterKey, CryptoError, FrameOpener, FrameSealer, ReplayGuard};

    pub(super) const NOW: u64 = 1_700_000_000_000;
    pub(super) const CONTEXT: &str = "GET /relay origin=00ff from=42 node=b";

    /// Argon2 is slow in debug builds: derive each test key once.
    pub(crate) fn key() -> &'static ClusterKey {
        static KEY: OnceLock<ClusterKey> = OnceLock::new();
        KEY.get_or_init(|| ClusterKey::derive("correct horse battery staple"))
    }

    pub(super) fn other_key() -> &'static ClusterKey {
        static KEY: OnceLock<ClusterKey> = OnceLock::new();
        KEY.get_or_init(|| ClusterKey::derive("correct horse battery stapler"))
    }

    /// B (`b`) dials A (`a`): A's sealer and B's opener of the resulting stream.
    pub(crate) fn handshake(
        b: &ClusterKey,
        a: &ClusterKey,
    ) -> Result<(FrameSealer, FrameOpener), CryptoError> {
        let request = b.relay_request([7; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        let accept = a.verify_relay_request(&request, CONTEXT, NOW, &mut guard)?;
        let response = accept.response_header([9; 16]);
        let opener = b.verify_relay_response(&request, &response)?;
        Ok((accept.sealer([9; 16]), opener))
    }
}

/// Properties that span the protocols: the pinned wire output, one secret against
/// another, and arbitrary input everywhere.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::encoding::hex;
    use super::testing::{handshake, key, other_key, NOW};
    use super::*;

    #[test]
    fn wire_output_is_pinned() {
        let request = key().relay_request([1; 16], 1234, "GET /relay");
        let packet = key().seal_datagram([2; 24], 1234, b"gossip");
        let accept = key()
            .verify_relay_request(&request, "GET /relay", 1234, &mut ReplayGuard::default())
            .expect("accepted");
        let response = accept.response_header([3; 16]);
        let frame = accept.sealer([3; 16]).seal(b"event");
        // Any change here breaks mixed-version clusters: bump the version instead.
        assert_eq!(
            request,
            "v1.1234.01010101010101010101010101010101\
             .a86048089b27f323131eaeb15aae2e5e5803d4f4b83cc769278b20533d29bd94"
        );
        assert_eq!(
            hex(&packet),
            "01020202020202020202020202020202020202020202020202\
             b48e5d01e8bda6bf1b03c8bae0f6a6fa80f3ef218b32c8182ceb4ec5fa50"
        );
        assert_eq!(
            response,
            "v1.03030303030303030303030303030303\
             .f2befae59a883b3d468f7d8711cfb4ce7ddd38a53acb33fd8d77b5a3a6d22aa8"
        );
        assert_eq!(hex(&frame), "2d1b9e639b82c01dc3689dff80485816125855758d");
    }

    #[test]
    fn debug_output_hides_key_material() {
        let printed = format!(
            "{:?} {:?} {:?}",
            key(),
            handshake(key(), key()),
            ReplayGuard::default()
        );
        for secret in [key().gossip, key().relay_auth, key().relay_session] {
            assert!(!printed.contains(&hex(&secret)), "{printed}");
            assert!(!printed.contains(&format!("{secret:?}")), "{printed}");
        }
        assert!(!printed.contains("correct horse"));
        assert_eq!(format!("{:?}", key()), "ClusterKey(<redacted>)");
    }

    #[test]
    fn a_different_secret_fails_everything() {
        assert_eq!(
            handshake(key(), other_key()).unwrap_err(),
            CryptoError::Forged
        );
        assert_eq!(
            handshake(other_key(), key()).unwrap_err(),
            CryptoError::Forged
        );
        let packet = key().seal_datagram([1; 24], NOW, b"x");
        assert!(other_key().open_datagram(&packet, NOW).is_err());
    }

    #[test]
    fn errors_display_a_message() {
        let all = [
            CryptoError::BadFormat,
            CryptoError::WrongVersion,
            CryptoError::Forged,
            CryptoError::Stale,
            CryptoError::Replayed,
            CryptoError::Broken,
            CryptoError::Exhausted,
        ];
        let messages: BTreeSet<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), all.len());
    }

    proptest! {
        #[test]
        fn random_input_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            text in "\\PC{0,160}",
            header_like in "v[0-9]{1,2}(\\.[0-9a-f]{0,70}){0,4}",
            now in any::<u64>(),
        ) {
            let mut guard = ReplayGuard::new(8);
            let _ = key().open_datagram(&bytes, now);
            let lossy = String::from_utf8_lossy(&bytes);
            for header in [&text, &header_like, &*lossy] {
                let _ = key().verify_relay_request(header, &text, now, &mut guard);
                let _ = key().verify_relay_response(header, &header_like);
                let _ = key().verify_relay_response(&header_like, header);
            }
            let (_, mut opener) = handshake(key(), key()).expect("handshake");
            prop_assert!(opener.open(&bytes).is_err());
            prop_assert!(opener.open(&bytes).is_err());
            prop_assert!(guard.is_empty());
        }
    }
}
