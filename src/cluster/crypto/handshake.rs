//! The relay handshake: B's request header, A's response header, and the session key
//! both derive for the stream's frames (`PROTOCOL.md`, "Relay handshake").

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::encoding::{hex, parse_decimal, split_header, unhex, HEADER_PREFIX};
use super::keys::expand;
use super::{ClusterKey, CryptoError, FrameOpener, FrameSealer, Key, ReplayGuard, RELAY_WINDOW_MS};

const LABEL_REQUEST: &[u8] = b"sse-cluster/v1/relay-request";
const LABEL_RESPONSE: &[u8] = b"sse-cluster/v1/relay-response";
const INFO_FRAMES: &[u8] = b"sse-cluster/v1/relay-frames/a-to-b";
const RELAY_NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

impl ClusterKey {
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
        Ok(FrameOpener::new(key))
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
        FrameSealer::new(key)
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

#[cfg(test)]
mod tests {
    use super::super::encoding::MAX_HEADER_LEN;
    use super::super::testing::{key, other_key, CONTEXT, NOW};
    use super::*;

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
}
