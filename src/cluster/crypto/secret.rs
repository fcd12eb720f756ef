//! The node's cluster secret in use: the keys bound to the node's clock, its nonce
//! source and the relay's replay guard, so callers never handle a time or a nonce
//! (`PROTOCOL.md`, "Nonces").

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::{ClusterKey, CryptoError, FrameOpener, FrameSealer, ReplayGuard};
use crate::clock::Clock;

/// The cluster secret in use: its keys, a nonce source and the relay's replay guard.
pub struct ClusterSecret {
    key: ClusterKey,
    clock: Clock,
    /// Nonces are this prefix (random per process) and a counter: unique, which is
    /// what XChaCha20 and the relay handshake need, and reproducible in simulations.
    prefix: [u8; 8],
    counter: AtomicU64,
    guard: Mutex<ReplayGuard>,
}

/// A's answer to an accepted relay request, both halves under one fresh server nonce.
#[derive(Debug)]
pub(crate) struct RelayAnswer {
    /// The response header (`x-relay-proof`).
    pub(crate) proof: String,
    /// Seals the response body's frames.
    pub(crate) sealer: FrameSealer,
}

impl ClusterSecret {
    /// Derives the keys (Argon2id: run it off the async threads).
    pub fn new(secret: &str, clock: Clock, nonce_prefix: u64) -> Self {
        ClusterSecret::with_key(ClusterKey::derive(secret), clock, nonce_prefix)
    }

    fn with_key(key: ClusterKey, clock: Clock, nonce_prefix: u64) -> Self {
        ClusterSecret {
            key,
            clock,
            prefix: nonce_prefix.to_be_bytes(),
            counter: AtomicU64::new(1),
            guard: Mutex::new(ReplayGuard::default()),
        }
    }

    fn nonce16(&self) -> [u8; 16] {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.prefix);
        nonce[8..].copy_from_slice(&self.counter.fetch_add(1, Relaxed).to_be_bytes());
        nonce
    }

    /// Seals one gossip datagram, stamped with the node's clock.
    pub(crate) fn seal_datagram(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&self.nonce16());
        nonce[16..].copy_from_slice(b"gossip\0\0");
        self.key
            .seal_datagram(nonce, self.clock.now_ms(), plaintext)
    }

    /// Opens one gossip datagram against the node's clock.
    pub(crate) fn open_datagram(&self, packet: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.open_datagram(packet, self.clock.now_ms())
    }

    /// B's `x-relay-auth` header for a relay request with `context`, under a fresh
    /// nonce and the node's clock.
    pub(crate) fn relay_request_header(&self, context: &str) -> String {
        let nonce = self.nonce16();
        self.key.relay_request(nonce, self.clock.now_ms(), context)
    }

    /// A's check of B's request header against the `context` A rebuilt, through the
    /// node's replay guard; on success, the proof to answer with and the sealer of
    /// the response body.
    pub(crate) fn accept_relay_request(
        &self,
        header: &str,
        context: &str,
    ) -> Result<RelayAnswer, CryptoError> {
        let accept = {
            let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
            self.key
                .verify_relay_request(header, context, self.clock.now_ms(), &mut guard)?
        };
        let server_nonce = self.nonce16();
        Ok(RelayAnswer {
            proof: accept.response_header(server_nonce),
            sealer: accept.sealer(server_nonce),
        })
    }

    /// B's check of A's response header to the request header B sent; on success,
    /// the opener of the response body.
    pub(crate) fn verify_relay_response(
        &self,
        request_header: &str,
        response_header: &str,
    ) -> Result<FrameOpener, CryptoError> {
        self.key
            .verify_relay_response(request_header, response_header)
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, other_key, NOW};
    use super::*;

    const CONTEXT: &str = "GET /relay/v1 origin=a from=1 since=0 node=b";

    fn node(prefix: u64) -> ClusterSecret {
        ClusterSecret::with_key(key().clone(), Clock::starting_at(NOW), prefix)
    }

    #[test]
    fn nonces_are_the_prefix_and_a_counter() {
        let secret = node(0x0102_0304_0506_0708);
        let first = secret.nonce16();
        let second = secret.nonce16();
        assert_eq!(first[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(first[8..], 1u64.to_be_bytes());
        assert_eq!(second[8..], 2u64.to_be_bytes());
    }

    #[test]
    fn a_relay_handshake_between_two_nodes_opens_the_stream_once() {
        let (a, b) = (node(1), node(2));
        let request = b.relay_request_header(CONTEXT);
        let mut answer = a.accept_relay_request(&request, CONTEXT).expect("accepted");
        let mut opener = b
            .verify_relay_response(&request, &answer.proof)
            .expect("proof");
        assert_eq!(
            opener.open(&answer.sealer.seal(b"event")),
            Ok(b"event".to_vec())
        );
        assert_eq!(
            a.accept_relay_request(&request, CONTEXT).unwrap_err(),
            CryptoError::Replayed
        );
        let stranger = ClusterSecret::with_key(other_key().clone(), Clock::starting_at(NOW), 3);
        let forged = stranger.relay_request_header(CONTEXT);
        assert_eq!(
            a.accept_relay_request(&forged, CONTEXT).unwrap_err(),
            CryptoError::Forged
        );
    }

    #[test]
    fn datagrams_between_two_nodes_open() {
        let (a, b) = (node(1), node(2));
        let packet = a.seal_datagram(b"digest");
        assert_eq!(b.open_datagram(&packet), Ok(b"digest".to_vec()));
        assert!(format!("{a:?}").contains("redacted"));
    }
}
