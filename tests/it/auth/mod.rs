//! Authorization of publish and subscribe with JWTs, over real sockets: token
//! sources, 401 against 403, `*`, `exp` and `nbf`, HS256, RS256 and ES256, a stream
//! that ends when its token expires, and the binary's flags.

mod binary;
mod keys;
mod publish;
mod subscribe;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sse_cluster::Config;

/// The HS256 secret of these tests.
pub(crate) const SECRET: &str = "a-test-secret-of-more-than-32-bytes!";

pub(crate) const RSA_PRIVATE: &str = include_str!("keys/rsa-private.pem");
pub(crate) const RSA_PUBLIC: &str = include_str!("keys/rsa-public.pem");
pub(crate) const EC_PRIVATE: &str = include_str!("keys/ec-private.pem");
pub(crate) const EC_PUBLIC: &str = include_str!("keys/ec-public.pem");

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token signed with [`SECRET`].
pub(crate) fn hs256(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

pub(crate) fn rs256(claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("RSA test key");
    sign(Algorithm::RS256, &key, claims)
}

pub(crate) fn es256(claims: Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("EC test key");
    sign(Algorithm::ES256, &key, claims)
}

pub(crate) fn sign(algorithm: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(algorithm), &claims, key).expect("sign a test token")
}

/// Claims granting `publish` and `subscribe`, valid for an hour.
pub(crate) fn grants(publish: &[&str], subscribe: &[&str]) -> Value {
    json!({
        "sse": {"publish": publish, "subscribe": subscribe},
        "exp": now() + 3600,
    })
}

/// A loopback node that checks HS256 tokens on both sides.
pub(crate) fn hs_config() -> Config {
    let mut config = crate::common::server::config();
    config.auth.jwt_secret = Some(SECRET.into());
    config.auth.publish = true;
    config.auth.subscribe = true;
    config
}
