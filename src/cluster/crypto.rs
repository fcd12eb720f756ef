//! Cluster cryptography: one shared secret authenticates and encrypts the traffic
//! between nodes. Pure functions over bytes: no sockets, no clock, no OS randomness.
//! Callers pass `now_ms` and every nonce, so a simulation stays a function of its seed.
//!
//! # Keys
//!
//! [`ClusterKey::derive`] runs once at start:
//!
//! ```text
//! pre    = SHA-256(secret)                          (any length in, 32 bytes out)
//! master = Argon2id(pre, salt = "sse-cluster/v1/argon2id", m = 19 MiB, t = 2, p = 1)
//! gossip        = HKDF-SHA256(ikm = master, info = "sse-cluster/v1/gossip")
//! relay-auth    = HKDF-SHA256(ikm = master, info = "sse-cluster/v1/relay-auth")
//! relay-session = HKDF-SHA256(ikm = master, info = "sse-cluster/v1/relay-session")
//! ```
//!
//! The salt is fixed (every node must derive the same key from the same secret) and
//! versioned: changing any parameter means a new `v2` salt and a new wire version.
//!
//! # Gossip datagrams
//!
//! `packet = 0x01 || nonce[24] || XChaCha20-Poly1305(gossip, nonce, aad = 0x01,
//! now_ms[8, big endian] || payload)`. The caller draws the 24-byte nonce at random.
//! [`ClusterKey::open_datagram`] rejects a packet whose sealed time is more than
//! [`DATAGRAM_WINDOW_MS`] away from the receiver's clock, which bounds how long a captured
//! datagram can be replayed; within the window a replay is accepted (chitchat state is
//! versioned, so an old delta re-applied changes nothing).
//!
//! # Relay handshake
//!
//! B dials A with an HTTP GET carrying [`ClusterKey::relay_request`]:
//!
//! ```text
//! request  = "v1." ts "." hex(client_nonce[16]) "." hex(req_mac)
//! req_mac  = HMAC-SHA256(relay-auth, "sse-cluster/v1/relay-request" || 0x00
//!                        || ts[8] || client_nonce || len(context)[8] || context)
//! response = "v1." hex(server_nonce[16]) "." hex(HMAC-SHA256(relay-auth,
//!            "sse-cluster/v1/relay-response" || 0x00 || req_mac || server_nonce))
//! session  = HKDF-SHA256(salt = client_nonce || server_nonce, ikm = relay-session,
//!                        info = "sse-cluster/v1/relay-frames/a-to-b" || req_mac)
//! ```
//!
//! A checks the MAC, freshness ([`RELAY_WINDOW_MS`]) and that the nonce is new
//! ([`ReplayGuard`]). B checks A's response MAC, which proves A holds the key and answers
//! this very request. The response body is a sequence of frames sealed with
//! ChaCha20-Poly1305 under the session key, frame `n` with nonce `n`: a dropped,
//! reordered, replayed, altered or injected frame fails to open, and the first failure
//! breaks the [`FrameOpener`] for good (the relay reconnects and resumes by sequence).
//!
//! # What is protected, what is not
//!
//! - Protected: confidentiality and integrity of gossip and of relayed events, the
//!   identity of the sender as "a holder of the cluster secret", the binding of a relay
//!   stream to its request (context string, e.g. origin and resume point).
//! - Not protected: the request line and headers of the relay GET (only authenticated,
//!   through the context the caller chooses to bind), traffic sizes and timing, which
//!   node among the key holders sent a message (any member can impersonate any other),
//!   replays of gossip within the window, and denial of service. There is no forward
//!   secrecy: whoever learns the secret can read recorded traffic. Key material is not
//!   wiped from memory on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Wire version of both the gossip packet and the relay headers.
pub const VERSION: u8 = 1;
/// How far a datagram's sealed time may be from the receiver's clock, either way.
pub const DATAGRAM_WINDOW_MS: u64 = 60_000;
/// How far a relay request's time may be from the server's clock, either way.
pub const RELAY_WINDOW_MS: u64 = 30_000;
/// Default bound on the number of request nonces a [`ReplayGuard`] remembers.
pub const REPLAY_GUARD_CAPACITY: usize = 4096;

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
const LABEL_REQUEST: &[u8] = b"sse-cluster/v1/relay-request";
const LABEL_RESPONSE: &[u8] = b"sse-cluster/v1/relay-response";
const INFO_FRAMES: &[u8] = b"sse-cluster/v1/relay-frames/a-to-b";

const DATAGRAM_NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const TIME_LEN: usize = 8;
const DATAGRAM_HEADER_LEN: usize = 1 + DATAGRAM_NONCE_LEN;
const RELAY_NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
const HEADER_PREFIX: &str = "v1";
/// Longer than any header this module writes ("v1." + 20 digits + 2 × "." + 32 + 64).
const MAX_HEADER_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;
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

/// The keys every node derives from the shared cluster secret.
#[derive(Clone)]
pub struct ClusterKey {
    gossip: Key,
    relay_auth: Key,
    relay_session: Key,
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

    /// B's request header: binds `client_nonce` (random, never reused), `now_ms` and
    /// `context` (whatever both sides can rebuild, e.g. the request path and query).
    /// ASCII only: digits, lowercase hex, `v` and dots.
    pub fn relay_request(&self, client_nonce: [u8; 16], now_ms: u64, context: &str) -> String {
        let mac = self.request_mac(now_ms, &client_nonce, context);
        format!(
            "{HEADER_PREFIX}.{now_ms}.{}.{}",
            hex(&client_nonce),
            hex(&mac)
        )
    }

    /// A's check of B's request header against the `context` A rebuilt from the request.
    /// Order: syntax, MAC (constant time), freshness, then the replay guard, so only
    /// authentic fresh requests take room in the guard.
    pub fn verify_relay_request(
        &self,
        header: &str,
        context: &str,
        now_ms: u64,
        guard: &mut ReplayGuard,
    ) -> Result<RelayAccept, CryptoError> {
        let request = parse_request(header)?;
        let expected = self.request_mac(request.sent_at, &request.client_nonce, context);
        if !bool::from(expected.ct_eq(&request.mac)) {
            return Err(CryptoError::Forged);
        }
        if request.sent_at.abs_diff(now_ms) > RELAY_WINDOW_MS {
            return Err(CryptoError::Stale);
        }
        guard.admit(request.client_nonce, request.sent_at, now_ms)?;
        Ok(RelayAccept {
            relay_auth: self.relay_auth,
            relay_session: self.relay_session,
            client_nonce: request.client_nonce,
            request_mac: request.mac,
        })
    }

    /// B's check of A's response header to the request header B sent. On success the
    /// returned opener decrypts the response body.
    pub fn verify_relay_response(
        &self,
        request_header: &str,
        response_header: &str,
    ) -> Result<FrameOpener, CryptoError> {
        let request = parse_request(request_header)?;
        let response = parse_response(response_header)?;
        let expected = response_mac(&self.relay_auth, &request.mac, &response.server_nonce);
        if !bool::from(expected.ct_eq(&response.mac)) {
            return Err(CryptoError::Forged);
        }
        let key = session_key(
            &self.relay_session,
            &request.client_nonce,
            &response.server_nonce,
            &request.mac,
        );
        Ok(FrameOpener {
            cipher: ChaCha20Poly1305::new(&key.into()),
            counter: 0,
            broken: false,
        })
    }

    fn request_mac(&self, sent_at: u64, client_nonce: &[u8; 16], context: &str) -> [u8; MAC_LEN] {
        let mut mac = new_hmac(&self.relay_auth);
        mac.update(LABEL_REQUEST);
        mac.update(&[0]);
        mac.update(&sent_at.to_be_bytes());
        mac.update(client_nonce);
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A's side of an accepted relay request: the response header and the frame sealer.
/// Pass the same fresh random `server_nonce` to both methods.
#[derive(Clone)]
pub struct RelayAccept {
    relay_auth: Key,
    relay_session: Key,
    client_nonce: [u8; 16],
    request_mac: [u8; MAC_LEN],
}

impl fmt::Debug for RelayAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayAccept")
            .field("client_nonce", &hex(&self.client_nonce))
            .finish_non_exhaustive()
    }
}

impl RelayAccept {
    /// A's proof of the key, bound to B's request (and so its nonce and context) and to
    /// `server_nonce`.
    pub fn response_header(&self, server_nonce: [u8; 16]) -> String {
        let mac = response_mac(&self.relay_auth, &self.request_mac, &server_nonce);
        format!("{HEADER_PREFIX}.{}.{}", hex(&server_nonce), hex(&mac))
    }

    /// Seals the response body's frames under the session key for `server_nonce`.
    pub fn sealer(&self, server_nonce: [u8; 16]) -> FrameSealer {
        let key = session_key(
            &self.relay_session,
            &self.client_nonce,
            &server_nonce,
            &self.request_mac,
        );
        FrameSealer {
            cipher: ChaCha20Poly1305::new(&key.into()),
            counter: 0,
        }
    }
}

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

/// Remembers the nonces of accepted relay requests so none is accepted twice.
///
/// A nonce is kept while its request could still pass the freshness check, that is
/// until `sent_at + RELAY_WINDOW_MS < now_ms`, and at most `capacity` nonces are kept
/// (when full, the one sent earliest goes). Every forgotten time raises a floor, and a
/// request sent at or before the floor is refused as [`CryptoError::Stale`]. So the
/// guard never accepts a replay, whatever the load and even if the caller's clock steps
/// back; under a flood of authentic requests it refuses slightly late ones instead.
/// Memory: about 100 bytes per remembered nonce, so ~400 KiB at the default capacity.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    capacity: usize,
    by_nonce: BTreeMap<[u8; 16], u64>,
    by_time: BTreeSet<(u64, [u8; 16])>,
    floor: Option<u64>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(REPLAY_GUARD_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            by_nonce: BTreeMap::new(),
            by_time: BTreeSet::new(),
            floor: None,
        }
    }

    /// How many nonces are remembered now.
    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }

    fn admit(&mut self, nonce: [u8; 16], sent_at: u64, now_ms: u64) -> Result<(), CryptoError> {
        self.expire(now_ms);
        if self.by_nonce.contains_key(&nonce) {
            return Err(CryptoError::Replayed);
        }
        if self.below_floor(sent_at) {
            return Err(CryptoError::Stale);
        }
        while self.by_nonce.len() >= self.capacity && self.forget_oldest() {}
        if self.below_floor(sent_at) {
            return Err(CryptoError::Stale);
        }
        self.by_nonce.insert(nonce, sent_at);
        self.by_time.insert((sent_at, nonce));
        Ok(())
    }

    /// Forgets nonces whose requests would now fail the freshness check anyway.
    fn expire(&mut self, now_ms: u64) {
        while self
            .by_time
            .first()
            .is_some_and(|&(time, _)| time.saturating_add(RELAY_WINDOW_MS) < now_ms)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) -> bool {
        let Some((time, nonce)) = self.by_time.pop_first() else {
            return false;
        };
        self.by_nonce.remove(&nonce);
        self.floor = Some(self.floor.map_or(time, |floor| floor.max(time)));
        true
    }

    fn below_floor(&self, sent_at: u64) -> bool {
        self.floor.is_some_and(|floor| sent_at <= floor)
    }
}

struct ParsedRequest {
    sent_at: u64,
    client_nonce: [u8; 16],
    mac: [u8; MAC_LEN],
}

struct ParsedResponse {
    server_nonce: [u8; 16],
    mac: [u8; MAC_LEN],
}

fn parse_request(header: &str) -> Result<ParsedRequest, CryptoError> {
    let [time, nonce, mac] = split_header::<3>(header)?;
    Ok(ParsedRequest {
        sent_at: parse_decimal(time)?,
        client_nonce: unhex(nonce)?,
        mac: unhex(mac)?,
    })
}

fn parse_response(header: &str) -> Result<ParsedResponse, CryptoError> {
    let [nonce, mac] = split_header::<2>(header)?;
    Ok(ParsedResponse {
        server_nonce: unhex(nonce)?,
        mac: unhex(mac)?,
    })
}

/// Splits `v1.<f1>.<f2>...` into exactly `N` fields after checking the version.
fn split_header<const N: usize>(header: &str) -> Result<[&str; N], CryptoError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(CryptoError::BadFormat);
    }
    let mut parts = header.split('.');
    let version = parts.next().ok_or(CryptoError::BadFormat)?;
    if version != HEADER_PREFIX {
        let looks_versioned = version.len() > 1
            && version.starts_with('v')
            && version[1..].bytes().all(|b| b.is_ascii_digit());
        return Err(if looks_versioned {
            CryptoError::WrongVersion
        } else {
            CryptoError::BadFormat
        });
    }
    let mut fields = [""; N];
    for field in &mut fields {
        *field = parts.next().ok_or(CryptoError::BadFormat)?;
    }
    if parts.next().is_some() {
        return Err(CryptoError::BadFormat);
    }
    Ok(fields)
}

/// Canonical decimal only: digits, no sign, no leading zero, no overflow.
fn parse_decimal(field: &str) -> Result<u64, CryptoError> {
    let canonical = !field.is_empty()
        && field.bytes().all(|b| b.is_ascii_digit())
        && (field == "0" || !field.starts_with('0'));
    if !canonical {
        return Err(CryptoError::BadFormat);
    }
    field.parse().map_err(|_| CryptoError::BadFormat)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Lowercase hex of exactly `N` bytes.
fn unhex<const N: usize>(field: &str) -> Result<[u8; N], CryptoError> {
    fn nibble(digit: u8) -> Result<u8, CryptoError> {
        match digit {
            b'0'..=b'9' => Ok(digit - b'0'),
            b'a'..=b'f' => Ok(digit - b'a' + 10),
            _ => Err(CryptoError::BadFormat),
        }
    }
    let digits = field.as_bytes();
    if digits.len() != N * 2 {
        return Err(CryptoError::BadFormat);
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

fn new_hmac(key: &Key) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn response_mac(
    relay_auth: &Key,
    request_mac: &[u8; MAC_LEN],
    server_nonce: &[u8; 16],
) -> [u8; MAC_LEN] {
    let mut mac = new_hmac(relay_auth);
    mac.update(LABEL_RESPONSE);
    mac.update(&[0]);
    mac.update(request_mac);
    mac.update(server_nonce);
    mac.finalize().into_bytes().into()
}

fn session_key(
    relay_session: &Key,
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
    request_mac: &[u8; MAC_LEN],
) -> Key {
    let mut salt = [0u8; 2 * RELAY_NONCE_LEN];
    salt[..RELAY_NONCE_LEN].copy_from_slice(client_nonce);
    salt[RELAY_NONCE_LEN..].copy_from_slice(server_nonce);
    let hkdf = Hkdf::<Sha256>::new(Some(&salt), relay_session);
    expand(&hkdf, &[INFO_FRAMES, request_mac])
}

fn expand(hkdf: &Hkdf<Sha256>, info: &[&[u8]]) -> Key {
    let mut key = [0u8; 32];
    hkdf.expand_multi_info(info, &mut key)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    key
}

/// Frame `n` uses the 96-bit nonce `0u32 || n` (big endian).
fn frame_nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const CONTEXT: &str = "GET /relay origin=00ff from=42 node=b";

    /// Argon2 is slow in debug builds: derive each test key once.
    fn key() -> &'static ClusterKey {
        static KEY: OnceLock<ClusterKey> = OnceLock::new();
        KEY.get_or_init(|| ClusterKey::derive("correct horse battery staple"))
    }

    fn other_key() -> &'static ClusterKey {
        static KEY: OnceLock<ClusterKey> = OnceLock::new();
        KEY.get_or_init(|| ClusterKey::derive("correct horse battery stapler"))
    }

    fn handshake(
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

    fn flip(header: &str, index: usize) -> String {
        let mut bytes = header.as_bytes().to_vec();
        bytes[index] = match bytes[index] {
            b'0' => b'1',
            b'.' => b'-',
            b'v' => b'w',
            _ => b'0',
        };
        String::from_utf8(bytes).expect("ASCII stays ASCII")
    }

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
    fn derivation_accepts_empty_and_long_secrets() {
        let empty = ClusterKey::derive("");
        let long = ClusterKey::derive(&"x".repeat(100_000));
        assert_ne!(empty.gossip, long.gossip);
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
    fn request_header_is_plain_ascii() {
        let header = key().relay_request([0xfe; 16], NOW, "ctx with spaces\r\n");
        assert!(header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert!(header.len() <= MAX_HEADER_LEN);
        let longest = key().relay_request([0xff; 16], u64::MAX, CONTEXT);
        assert!(longest.len() <= MAX_HEADER_LEN);
        let response = RelayAccept {
            relay_auth: [0; 32],
            relay_session: [0; 32],
            client_nonce: [0; 16],
            request_mac: [0; 32],
        }
        .response_header([0xff; 16]);
        assert!(response
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.'));
    }

    #[test]
    fn request_with_any_character_altered_is_refused() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        for index in 0..header.len() {
            let altered = flip(&header, index);
            let mut guard = ReplayGuard::default();
            let result = key().verify_relay_request(&altered, CONTEXT, NOW, &mut guard);
            assert!(result.is_err(), "{index}: {altered}");
            assert!(guard.is_empty());
        }
    }

    #[test]
    fn request_truncated_or_extended_is_refused() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        for len in 0..header.len() {
            let result = key().verify_relay_request(&header[..len], CONTEXT, NOW, &mut guard);
            assert!(result.is_err(), "{len}");
        }
        for suffix in ["0", ".", ".00", " "] {
            let longer = format!("{header}{suffix}");
            let result = key().verify_relay_request(&longer, CONTEXT, NOW, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::BadFormat, "{suffix:?}");
        }
        let huge = format!("{header}{}", "0".repeat(10_000));
        let result = key().verify_relay_request(&huge, CONTEXT, NOW, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::BadFormat);
        assert!(guard.is_empty());
    }

    #[test]
    fn request_in_non_canonical_syntax_is_refused() {
        let header = key().relay_request([0xab; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        let variants = [
            header.replacen("v1.", "v1.0", 1),
            header.replacen("v1.", "v1.+", 1),
            header.replace("ab", "AB"),
            header.replacen("v1", "V1", 1),
        ];
        for variant in variants {
            let result = key().verify_relay_request(&variant, CONTEXT, NOW, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::BadFormat, "{variant}");
        }
        let v2 = header.replacen("v1", "v2", 1);
        let result = key().verify_relay_request(&v2, CONTEXT, NOW, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::WrongVersion);
    }

    #[test]
    fn request_for_another_context_or_key_is_forged() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        for context in [
            "",
            "GET /relay origin=00ff from=43 node=b",
            &format!("{CONTEXT} "),
        ] {
            let result = key().verify_relay_request(&header, context, NOW, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::Forged);
        }
        let result = other_key().verify_relay_request(&header, CONTEXT, NOW, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Forged);
        assert!(guard.is_empty());
    }

    #[test]
    fn request_outside_the_window_is_stale() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        let window = RELAY_WINDOW_MS;
        for now in [NOW + window + 1, NOW - window - 1] {
            let mut guard = ReplayGuard::default();
            let result = key().verify_relay_request(&header, CONTEXT, now, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::Stale);
        }
        for now in [NOW + window, NOW - window] {
            let mut guard = ReplayGuard::default();
            assert!(key()
                .verify_relay_request(&header, CONTEXT, now, &mut guard)
                .is_ok());
        }
    }

    #[test]
    fn replayed_request_is_refused_until_it_is_stale() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        assert!(key()
            .verify_relay_request(&header, CONTEXT, NOW, &mut guard)
            .is_ok());
        for now in [NOW, NOW + 1, NOW + RELAY_WINDOW_MS] {
            let result = key().verify_relay_request(&header, CONTEXT, now, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::Replayed, "{now}");
        }
        let result =
            key().verify_relay_request(&header, CONTEXT, NOW + RELAY_WINDOW_MS + 1, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
        // The same nonce at another time is a replay too, as long as it is remembered.
        let moved = key().relay_request([7; 16], NOW + 5, CONTEXT);
        let result = key().verify_relay_request(&moved, CONTEXT, NOW + 5, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Replayed);
    }

    #[test]
    fn replay_guard_forgets_expired_nonces() {
        let mut guard = ReplayGuard::default();
        for n in 0..10u8 {
            let header = key().relay_request([n; 16], NOW + u64::from(n), CONTEXT);
            assert!(key()
                .verify_relay_request(&header, CONTEXT, NOW, &mut guard)
                .is_ok());
        }
        assert_eq!(guard.len(), 10);
        let later = NOW + RELAY_WINDOW_MS + 5;
        let header = key().relay_request([99; 16], later, CONTEXT);
        assert!(key()
            .verify_relay_request(&header, CONTEXT, later, &mut guard)
            .is_ok());
        // Nonces sent at NOW..NOW+4 expired; NOW+5..NOW+9 and the new one remain.
        assert_eq!(guard.len(), 6);
        // Forgetting is safe even if the clock then steps back: the forgotten nonce is
        // refused rather than accepted again.
        let first = key().relay_request([0; 16], NOW, CONTEXT);
        let result = key().verify_relay_request(&first, CONTEXT, NOW, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
    }

    #[test]
    fn full_replay_guard_never_accepts_a_replay() {
        let mut guard = ReplayGuard::new(4);
        let headers: Vec<String> = (0..8u8)
            .map(|n| key().relay_request([n; 16], NOW + u64::from(n), CONTEXT))
            .collect();
        for header in &headers {
            assert!(key()
                .verify_relay_request(header, CONTEXT, NOW + 10, &mut guard)
                .is_ok());
            assert!(guard.len() <= 4);
        }
        for header in &headers {
            let result = key().verify_relay_request(header, CONTEXT, NOW + 10, &mut guard);
            assert!(
                matches!(result, Err(CryptoError::Replayed | CryptoError::Stale)),
                "{result:?}"
            );
        }
        // An evicted time is a floor: a new nonce sent at or before it is refused too.
        let late = key().relay_request([50; 16], NOW + 3, CONTEXT);
        let result = key().verify_relay_request(&late, CONTEXT, NOW + 10, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
        let fresh = key().relay_request([51; 16], NOW + 10, CONTEXT);
        assert!(key()
            .verify_relay_request(&fresh, CONTEXT, NOW + 10, &mut guard)
            .is_ok());
    }

    #[test]
    fn response_with_any_character_altered_is_refused() {
        let request = key().relay_request([7; 16], NOW, CONTEXT);
        let accept = key()
            .verify_relay_request(&request, CONTEXT, NOW, &mut ReplayGuard::default())
            .expect("accepted");
        let response = accept.response_header([9; 16]);
        assert!(key().verify_relay_response(&request, &response).is_ok());
        for index in 0..response.len() {
            let altered = flip(&response, index);
            assert!(
                key().verify_relay_response(&request, &altered).is_err(),
                "{index}"
            );
        }
        for len in 0..response.len() {
            assert!(key()
                .verify_relay_response(&request, &response[..len])
                .is_err());
        }
        let longer = format!("{response}0");
        assert!(key().verify_relay_response(&request, &longer).is_err());
    }

    #[test]
    fn response_to_another_request_or_from_another_key_is_forged() {
        let request = key().relay_request([7; 16], NOW, CONTEXT);
        let accept = key()
            .verify_relay_request(&request, CONTEXT, NOW, &mut ReplayGuard::default())
            .expect("accepted");
        let response = accept.response_header([9; 16]);
        let other_request = key().relay_request([8; 16], NOW, CONTEXT);
        assert_eq!(
            key()
                .verify_relay_response(&other_request, &response)
                .unwrap_err(),
            CryptoError::Forged
        );
        assert_eq!(
            other_key()
                .verify_relay_response(&request, &response)
                .unwrap_err(),
            CryptoError::Forged
        );
        // The request header itself cannot be reflected back as a response.
        assert!(key().verify_relay_response(&request, &request).is_err());
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
    fn sessions_differ_per_nonce_pair() {
        let request = key().relay_request([7; 16], NOW, CONTEXT);
        let accept = key()
            .verify_relay_request(&request, CONTEXT, NOW, &mut ReplayGuard::default())
            .expect("accepted");
        let mut opener = key()
            .verify_relay_response(&request, &accept.response_header([9; 16]))
            .expect("response");
        // A sealer for another server nonce (another session) cannot feed this opener.
        let frame = accept.sealer([10; 16]).seal(b"event");
        assert_eq!(opener.open(&frame), Err(CryptoError::Forged));
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
