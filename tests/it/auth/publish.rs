//! Publishing with authorization on: 401 without a good token, 403 without the
//! channel, `*` for everything.

use serde_json::{json, Value};

use super::*;
use crate::common::server::*;

const BODY: &str = r#"{"data":"hi"}"#;

/// POSTs [`BODY`] with an optional bearer token; status, JSON answer and the
/// `WWW-Authenticate` header.
async fn post(server: &Server, path: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = server
        .http
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(BODY);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("publish request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    (
        status,
        response.json().await.expect("JSON answer"),
        challenge,
    )
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().expect("an error message")
}

#[tokio::test]
async fn auth_off_leaves_everything_open() {
    let server = Server::start(config()).await;
    let _stream = open_stream(server.addr, "/channel/news", &[]).await;
    assert_eq!(post(&server, "/channel/news", None).await.0, 200);
    assert_eq!(post(&server, "/channel", None).await.0, 200);
    // A token, even a bad one, changes nothing when nobody asks for it.
    assert_eq!(post(&server, "/channel/news", Some("junk")).await.0, 200);
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401_and_counted() {
    let server = Server::start(hs_config()).await;
    let (status, answer, challenge) = post(&server, "/channel/news", None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(error(&answer).contains("token is required"), "{answer}");
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="sse-cluster""#));

    let (status, answer, _) = post(&server, "/channel/news", Some("not-a-jwt")).await;
    assert_eq!(status, 401);
    assert!(error(&answer).contains("not a JWT"), "{answer}");

    let forged = sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"another secret"),
        grants(&["*"], &[]),
    );
    let (status, answer, _) = post(&server, "/channel/news", Some(&forged)).await;
    assert_eq!(status, 401);
    assert!(error(&answer).contains("bad signature"), "{answer}");

    // A header in another scheme is refused, not ignored.
    let response = server
        .http
        .post(server.url("/channel/news"))
        .header("content-type", "application/json")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(BODY)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 401);

    let unauthorized = r#"sse_request_errors_total{kind="unauthorized"}"#;
    assert_eq!(server.metric(unauthorized).await, 4);
    assert_eq!(
        server
            .metric(r#"sse_request_errors_total{kind="forbidden"}"#)
            .await,
        0
    );
}

#[tokio::test]
async fn a_token_without_the_channel_is_403_and_counted() {
    let server = Server::start(hs_config()).await;
    let token = hs256(grants(&["news"], &["*"]));
    assert_eq!(post(&server, "/channel/news", Some(&token)).await.0, 200);

    let (status, answer, _) = post(&server, "/channel/sport", Some(&token)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("\"sport\""), "{answer}");

    // Reading rights do not grant writing.
    let reader = hs256(grants(&[], &["*"]));
    assert_eq!(post(&server, "/channel/news", Some(&reader)).await.0, 403);
    // No `sse` claim at all: a valid token that grants nothing.
    let bare = hs256(json!({"exp": now() + 60}));
    assert_eq!(post(&server, "/channel/news", Some(&bare)).await.0, 403);

    assert_eq!(
        server
            .metric(r#"sse_request_errors_total{kind="forbidden"}"#)
            .await,
        3
    );
}

#[tokio::test]
async fn publishing_to_every_channel_needs_the_star() {
    let server = Server::start(hs_config()).await;
    let some = hs256(grants(&["news", "sport"], &[]));
    let (status, answer, _) = post(&server, "/channel", Some(&some)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("\"*\""), "{answer}");

    let all = hs256(grants(&["*"], &[]));
    assert_eq!(post(&server, "/channel", Some(&all)).await.0, 200);
    assert_eq!(post(&server, "/channel/anything", Some(&all)).await.0, 200);
}

#[tokio::test]
async fn publishing_to_a_client_needs_its_channel() {
    let mut config = hs_config();
    config.auth.subscribe = false;
    let server = Server::start(config).await;
    let mut stream = open_stream(server.addr, "/channel/news/client/c1", &[]).await;
    let token = hs256(grants(&["news"], &[]));
    let (status, answer, _) = post(&server, "/channel/news/client/c1", Some(&token)).await;
    assert_eq!(status, 200, "{answer}");
    let frame = stream.next_event().await.expect("the targeted event");
    assert_eq!(frame.data.as_deref(), Some("\"hi\""));

    let other = hs256(grants(&["sport"], &[]));
    assert_eq!(
        post(&server, "/channel/news/client/c1", Some(&other))
            .await
            .0,
        403
    );
    assert_eq!(post(&server, "/channel/news/client/c1", None).await.0, 401);
}

#[tokio::test]
async fn exp_and_nbf_are_honoured_with_a_small_leeway() {
    let server = Server::start(hs_config()).await;
    let at = |exp: Option<u64>, nbf: Option<u64>| {
        let mut claims = json!({"sse": {"publish": ["*"]}});
        if let Some(exp) = exp {
            claims["exp"] = exp.into();
        }
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        hs256(claims)
    };
    let t = now();
    let expired = at(Some(t - 60), None);
    let (status, answer, _) = post(&server, "/channel/news", Some(&expired)).await;
    assert_eq!(status, 401);
    assert!(error(&answer).contains("expired"), "{answer}");

    let early = at(Some(t + 600), Some(t + 60));
    let (status, answer, _) = post(&server, "/channel/news", Some(&early)).await;
    assert_eq!(status, 401);
    assert!(error(&answer).contains("not valid yet"), "{answer}");

    // Within the leeway: a clock a second or two apart is no reason to refuse.
    let skewed = at(Some(t - 1), Some(t + 1));
    assert_eq!(post(&server, "/channel/news", Some(&skewed)).await.0, 200);
    // Without exp (a service's long-lived token) and with nbf in the past.
    let open_ended = at(None, Some(t - 10));
    assert_eq!(
        post(&server, "/channel/news", Some(&open_ended)).await.0,
        200
    );
    // A malformed time is a bad token, not a crash.
    let odd = hs256(json!({"sse": {"publish": ["*"]}, "exp": "tomorrow"}));
    assert_eq!(post(&server, "/channel/news", Some(&odd)).await.0, 401);
}

#[tokio::test]
async fn cors_preflight_needs_no_token() {
    let mut config = hs_config();
    config.http.cors_enabled = true;
    let server = Server::start(config).await;
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/channel/news"))
        .header("origin", "https://example.org")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(response.status(), 204);
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ASCII")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // The refusal itself carries CORS headers, so a page can read the reason.
    let response = server
        .http
        .post(server.url("/channel/news"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}
