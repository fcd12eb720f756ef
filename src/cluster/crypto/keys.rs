//! Key derivation: the three subkeys every node derives from the shared secret
//! (`PROTOCOL.md`, "Keys").

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::Key;

const ARGON2_SALT: &[u8] = b"sse-cluster/v1/argon2id";
/// OWASP's first Argon2id profile (19 MiB, 2 passes, 1 lane): tens of milliseconds in
/// an optimised build. Evaluated at compile time, so invalid values fail the build.
const ARGON2_PARAMS: Params = match Params::new(19 * 1024, 2, 1, Some(32)) {
    Ok(params) => params,
    Err(_) => panic!("invalid Argon2 parameters"),
};
const INFO_GOSSIP: &[u8] = b"sse-cluster/v1/gossip";
const INFO_RELAY_AUTH: &[u8] = b"sse-cluster/v1/relay-auth";
const INFO_RELAY_SESSION: &[u8] = b"sse-cluster/v1/relay-session";

/// The keys every node derives from the shared cluster secret.
#[derive(Clone)]
pub struct ClusterKey {
    /// Seals gossip datagrams (`datagram.rs`).
    pub(super) gossip: Key,
    /// MACs the relay request and response headers (`handshake.rs`).
    pub(super) relay_auth: Key,
    /// The input from which each relay stream's session key is derived.
    pub(super) relay_session: Key,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// Derives the cluster keys from a secret of any length. Deterministic: the same
    /// secret gives the same keys on every node. Costs one Argon2id run (19 MiB).
    pub fn derive(secret: &str) -> ClusterKey {
        // Pre-hashing makes the Argon2 input a fixed 32 bytes, so the only input-dependent
        // Argon2 error (a password over 4 GiB) cannot happen.
        let pre = Sha256::digest(secret.as_bytes());
        let mut master = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, ARGON2_PARAMS)
            .hash_password_into(&pre, ARGON2_SALT, &mut master)
            .expect("Argon2 inputs are fixed-size constants");
        let hkdf = Hkdf::<Sha256>::from_prk(&master).expect("32 bytes is a valid PRK length");
        ClusterKey {
            gossip: expand(&hkdf, &[INFO_GOSSIP]),
            relay_auth: expand(&hkdf, &[INFO_RELAY_AUTH]),
            relay_session: expand(&hkdf, &[INFO_RELAY_SESSION]),
        }
    }
}

/// HKDF-SHA256 expansion to one 32-byte key, `info` being the concatenation of parts.
pub(super) fn expand(hkdf: &Hkdf<Sha256>, info: &[&[u8]]) -> Key {
    let mut key = [0u8; 32];
    hkdf.expand_multi_info(info, &mut key)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    key
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key, other_key};
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_depends_on_the_secret() {
        let again = ClusterKey::derive("correct horse battery staple");
        assert_eq!(again.gossip, key().gossip);
        assert_eq!(again.relay_auth, key().relay_auth);
        assert_eq!(again.relay_session, key().relay_session);
        assert_ne!(key().gossip, other_key().gossip);
        // Subkeys are independent of each other.
        assert_ne!(key().gossip, key().relay_auth);
        assert_ne!(key().relay_auth, key().relay_session);
    }

    #[test]
    fn derivation_accepts_empty_and_long_secrets() {
        let empty = ClusterKey::derive("");
        let long = ClusterKey::derive(&"x".repeat(100_000));
        assert_ne!(empty.gossip, long.gossip);
    }
}
