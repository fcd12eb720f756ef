//! The binary's authorization flags: refused combinations exit 2 with one line that
//! names the option, and a key alone guards publishing.

use super::*;
use crate::common::node::{assert_start_refused, NodeProcess};

#[tokio::test]
async fn auth_without_a_key_is_refused_at_start() {
    assert_start_refused(&["--auth.subscribe"], &[], "--auth.subscribe").await;
    assert_start_refused(&["--auth.publish=true"], &[], "--auth.publish").await;
    assert_start_refused(&[], &[("AUTH_SUBSCRIBE", "true")], "--auth.subscribe").await;
    assert_start_refused(&[], &[("AUTH_JWT_SECRET", "")], "--auth.jwtSecret").await;
}

#[tokio::test]
async fn unusable_key_files_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("sse-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let private = dir.join("private.pem");
    std::fs::write(&private, RSA_PRIVATE).expect("write key");
    let private = private.to_str().expect("UTF-8 path");
    assert_start_refused(
        &["--auth.jwtPublicKeyFile", private],
        &[],
        "--auth.jwtPublicKeyFile",
    )
    .await;
    let missing = dir.join("missing.pem");
    assert_start_refused(
        &[],
        &[("AUTH_JWT_PUBLIC_KEY_FILE", missing.to_str().expect("UTF-8"))],
        "--auth.jwtPublicKeyFile",
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_key_alone_guards_publishing_and_leaves_subscribing_open() {
    // Only the key, from the environment: nothing else of the test's may configure it.
    let node = NodeProcess::builder()
        .args(&["--log.level", "warn"])
        .clean_env()
        .env("AUTH_JWT_SECRET", SECRET)
        .spawn();
    node.wait_healthy().await;
    let client = &node.client;
    let url = |path: &str| node.url(path);
    let publish = |token: Option<String>| {
        let mut request = client
            .post(url("/channel/news"))
            .header("content-type", "application/json")
            .body(r#"{"data":1}"#);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(publish(None).await.expect("publish").status(), 401);
    let token = hs256(grants(&["news"], &[]));
    assert_eq!(publish(Some(token)).await.expect("publish").status(), 200);
    let subscribe = client.get(url("/channel/news")).send().await.expect("GET");
    assert_eq!(subscribe.status(), 200);
    drop(subscribe);
}
