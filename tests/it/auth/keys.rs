//! RS256 and ES256 tokens, checked with a public key; tokens that claim another
//! algorithm than the key's are refused.

use jsonwebtoken::{Algorithm, EncodingKey};

use super::*;
use crate::common::server::*;

fn config_with_public_key(pem: &str) -> Config {
    let mut config = config();
    config.auth.jwt_public_key = Some(pem.into());
    config.auth.publish = true;
    config
}

async fn post(server: &Server, token: &str) -> u16 {
    server
        .http
        .post(server.url("/channel/news"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"data":1}"#)
        .send()
        .await
        .expect("publish")
        .status()
        .as_u16()
}

#[tokio::test]
async fn rs256_tokens_are_checked_with_the_public_key() {
    let server = Server::start(config_with_public_key(RSA_PUBLIC)).await;
    assert_eq!(post(&server, &rs256(grants(&["news"], &[]))).await, 200);
    assert_eq!(post(&server, &rs256(grants(&["sport"], &[]))).await, 403);
    // Signed by the EC key: an algorithm this node does not accept.
    assert_eq!(post(&server, &es256(grants(&["news"], &[]))).await, 401);
    // The classic confusion: HS256 keyed with the public key's PEM text.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        grants(&["*"], &[]),
    );
    assert_eq!(post(&server, &confused).await, 401);
    // No secret is configured, so no HS256 token passes at all.
    assert_eq!(post(&server, &hs256(grants(&["*"], &[]))).await, 401);
}

#[tokio::test]
async fn es256_tokens_are_checked_with_the_public_key() {
    let server = Server::start(config_with_public_key(EC_PUBLIC)).await;
    assert_eq!(post(&server, &es256(grants(&["news"], &[]))).await, 200);
    assert_eq!(post(&server, &es256(grants(&[], &["news"]))).await, 403);
    assert_eq!(post(&server, &rs256(grants(&["news"], &[]))).await, 401);
}

#[tokio::test]
async fn a_secret_and_a_public_key_work_side_by_side() {
    let mut config = config_with_public_key(EC_PUBLIC);
    config.auth.jwt_secret = Some(SECRET.into());
    let server = Server::start(config).await;
    assert_eq!(post(&server, &es256(grants(&["news"], &[]))).await, 200);
    assert_eq!(post(&server, &hs256(grants(&["news"], &[]))).await, 200);
    assert_eq!(post(&server, &rs256(grants(&["news"], &[]))).await, 401);
}

#[test]
fn keys_are_recognised_and_private_keys_refused() {
    use sse_cluster::config::JwtPublicKey;
    assert_eq!(
        JwtPublicKey::from_pem(RSA_PUBLIC).expect("RSA").algorithms[0],
        Algorithm::RS256
    );
    assert_eq!(
        JwtPublicKey::from_pem(EC_PUBLIC).expect("EC").algorithms,
        vec![Algorithm::ES256]
    );
    assert!(JwtPublicKey::from_pem(RSA_PRIVATE).is_err());
    assert!(JwtPublicKey::from_pem(EC_PRIVATE).is_err());
    assert!(JwtPublicKey::from_pem("not a key").is_err());
    let mut bad = Config::default();
    bad.auth.jwt_public_key =
        Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into());
    assert_eq!(bad.validate().unwrap_err().option, "auth.jwtPublicKeyFile");
}
