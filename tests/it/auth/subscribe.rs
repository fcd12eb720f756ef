//! Subscribing with authorization on: each place a token may travel, 401 against
//! 403, and a stream that ends when its token expires.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::common::server::*;

/// Opens `path` with `headers` and returns the status and, for refusals, the JSON
/// answer (a successful stream is dropped).
async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Option<Value>) {
    let mut request = server.http.get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("subscribe request");
    let status = response.status().as_u16();
    if status == 200 {
        return (status, None);
    }
    (status, Some(response.json().await.expect("JSON refusal")))
}

#[tokio::test]
async fn a_token_is_read_from_the_header_the_query_and_the_cookie() {
    let server = Server::start(hs_config()).await;
    let token = hs256(grants(&[], &["news"]));
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; sse_token={token}");

    assert_eq!(get(&server, "/channel/news", &[]).await.0, 401);
    assert_eq!(
        get(&server, "/channel/news", &[("authorization", &bearer)])
            .await
            .0,
        200
    );
    let query = format!("/channel/news?authorization={token}");
    assert_eq!(get(&server, &query, &[]).await.0, 200);
    let query = format!("/channel/news?lastEventId=x&authorization=Bearer%20{token}");
    assert_eq!(get(&server, &query, &[]).await.0, 200);
    assert_eq!(
        get(&server, "/channel/news", &[("cookie", &cookie)])
            .await
            .0,
        200
    );
    // The stream really is open, with the usual opening, for a query token
    // (what a browser's EventSource sends).
    let mut stream = open_stream(
        server.addr,
        &format!("/channel/news?authorization={token}"),
        &[],
    )
    .await;
    server.publish_as("/channel/news", r#"{"data":1}"#).await;
    assert_eq!(
        stream.next_event().await.expect("event").data.as_deref(),
        Some("1")
    );

    // A bad token in a cookie is refused like one in the header.
    let (status, answer) = get(&server, "/channel/news", &[("cookie", "sse_token=junk")]).await;
    assert_eq!(status, 401, "{answer:?}");
}

#[tokio::test]
async fn a_token_without_the_channel_is_403() {
    let server = Server::start(hs_config()).await;
    let token = hs256(grants(&["*"], &["news"]));
    let bearer = format!("Bearer {token}");
    let (status, answer) = get(&server, "/channel/sport", &[("authorization", &bearer)]).await;
    assert_eq!(status, 403);
    let answer = answer.expect("a reason");
    assert!(
        answer["error"]
            .as_str()
            .expect("message")
            .contains("subscribing to channel \"sport\""),
        "{answer}"
    );
    // A chosen client id is still on the channel's grant.
    assert_eq!(
        get(
            &server,
            "/channel/sport/client/c1",
            &[("authorization", &bearer)]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(
            &server,
            "/channel/news/client/c1",
            &[("authorization", &bearer)]
        )
        .await
        .0,
        200
    );
    let all = format!("Bearer {}", hs256(grants(&[], &["*"])));
    assert_eq!(
        get(&server, "/channel/sport", &[("authorization", &all)])
            .await
            .0,
        200
    );
}

/// A stream of several channels needs every one of them in the token: `403` names
/// the first it lacks, and nothing is subscribed.
#[tokio::test]
async fn a_stream_of_several_channels_needs_each_of_them_in_the_token() {
    let server = Server::start(hs_config()).await;
    let bearer = format!("Bearer {}", hs256(grants(&[], &["news", "weather"])));
    let auth = [("authorization", bearer.as_str())];
    for path in [
        "/channel/news,sport,weather",
        "/channel/weather,sport",
        "/channel/news,sport/client/c1",
    ] {
        let (status, answer) = get(&server, path, &auth).await;
        assert_eq!(status, 403, "{path}: {answer:?}");
        let answer = answer.expect("a reason");
        let error = answer["error"].as_str().expect("message");
        assert!(error.contains("channel \"sport\""), "{path}: {error}");
    }
    let status = server.get_json("/status").await;
    assert_eq!(status["channels"], json!({}), "{status}");
    assert_eq!(get(&server, "/channel/weather,news", &auth).await.0, 200);
    let star = format!("Bearer {}", hs256(grants(&[], &["*"])));
    let (status, _) = get(
        &server,
        "/channel/news,sport,weather",
        &[("authorization", &star)],
    )
    .await;
    assert_eq!(status, 200);
}

/// `sse.clients` says which client ids a token may claim: a stream cannot take over
/// another user's id (and be replayed the events targeted at it).
#[tokio::test]
async fn a_token_with_a_clients_claim_may_choose_only_those_ids() {
    let server = Server::start(hs_config()).await;
    let mut claims = grants(&[], &["news"]);
    claims["sse"]["clients"] = json!(["alice"]);
    let alice = format!("Bearer {}", hs256(claims));
    let path = "/channel/news/client/alice";
    assert_eq!(
        get(&server, path, &[("authorization", &alice)]).await.0,
        200
    );
    let (status, answer) = get(
        &server,
        "/channel/news/client/bob",
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(status, 403, "{answer:?}");
    let answer = answer.expect("a reason");
    let message = answer["error"].as_str().expect("message");
    assert!(message.contains("client id \"bob\""), "{message}");
    // An assigned id needs no grant.
    assert_eq!(
        get(&server, "/channel/news", &[("authorization", &alice)])
            .await
            .0,
        200
    );
    // Without the claim, any id may be chosen (tokens minted before it existed).
    let any = format!("Bearer {}", hs256(grants(&[], &["news"])));
    assert_eq!(
        get(
            &server,
            "/channel/news/client/bob",
            &[("authorization", &any)]
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn one_side_can_stay_open() {
    // A key with only publishing guarded: anyone may read.
    let mut config = hs_config();
    config.auth.subscribe = false;
    let server = Server::start(config).await;
    assert_eq!(get(&server, "/channel/news", &[]).await.0, 200);
    let (status, _) = server.post("/channel/news", r#"{"data":1}"#).await;
    assert_eq!(status, 401);

    // And the other way round.
    let mut config = hs_config();
    config.auth.publish = false;
    let server = Server::start(config).await;
    assert_eq!(get(&server, "/channel/news", &[]).await.0, 401);
    server.publish("/channel/news", r#"{"data":1}"#).await;
}

#[tokio::test]
async fn the_stream_ends_when_the_token_expires() {
    let server = Server::start(hs_config()).await;
    let exp = now() + 2;
    let token = hs256(json!({"sse": {"subscribe": ["news"]}, "exp": exp}));
    let bearer = format!("Bearer {token}");
    let started = Instant::now();
    let mut stream = open_stream(server.addr, "/channel/news", &[("authorization", &bearer)]).await;
    server
        .publish_as("/channel/news", r#"{"data":"before"}"#)
        .await;
    let first = stream.next_event().await.expect("an event while valid");
    assert_eq!(first.data.as_deref(), Some("\"before\""));

    let last = stream.next_event().await.expect("the expired event");
    assert_eq!(last.event.as_deref(), Some("expired"), "{last:?}");
    assert!(last.json()["reason"].is_string(), "{last:?}");
    let rest = stream.read_to_end(WAIT).await;
    assert!(stream.ended, "the stream ends after `expired`");
    assert!(rest.is_empty(), "nothing follows `expired`: {rest:?}");
    // Not before the token's time (whole seconds), not long after it.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "ended after {waited:?}"
    );
    assert!(waited < Duration::from_secs(6), "ended after {waited:?}");

    // Reconnecting with the same token past its leeway is refused.
    let late = hs256(json!({"sse": {"subscribe": ["news"]}, "exp": now() - 10}));
    let late = format!("Bearer {late}");
    assert_eq!(
        get(&server, "/channel/news", &[("authorization", &late)])
            .await
            .0,
        401
    );
}

impl Server {
    /// Publishes with a token that may publish anywhere.
    async fn publish_as(&self, path: &str, body: &str) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(hs256(grants(&["*"], &[])))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 200);
    }
}

/// A pattern in the token grants the pattern, its channels and narrower patterns;
/// a plain channel grants no pattern.
#[tokio::test]
async fn a_pattern_in_the_token_grants_its_channels_and_patterns() {
    let server = Server::start(hs_config()).await;
    let bearer = format!("Bearer {}", hs256(grants(&[], &["orders.*", "news"])));
    let auth = [("authorization", bearer.as_str())];
    for path in [
        "/channel/orders.*",
        "/channel/orders.eu.*",
        "/channel/orders.1",
        "/channel/orders.*,news",
    ] {
        assert_eq!(get(&server, path, &auth).await.0, 200, "{path}");
    }
    for (path, refused) in [
        ("/channel/news.*", "news.*"),
        ("/channel/orders:*", "orders:*"),
        ("/channel/orders.*,sport.*", "sport.*"),
    ] {
        let (status, answer) = get(&server, path, &auth).await;
        assert_eq!(status, 403, "{path}: {answer:?}");
        let error = answer.expect("a reason")["error"].to_string();
        assert!(error.contains(refused), "{path}: {error}");
    }
}
