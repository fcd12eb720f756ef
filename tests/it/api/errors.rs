//! Bad input: each refusal has its status and a JSON error naming the problem, and
//! none of it disturbs other clients.

use reqwest::Method;

use crate::common::server::*;

/// Sends a request and returns the status and the `error` text of the JSON answer.
async fn refused(
    server: &Server,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = server.http.request(method.clone(), server.url(path));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.body(body.to_owned()).send().await.expect("request");
    let status = response.status().as_u16();
    let content = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    assert!(
        content.starts_with("application/json"),
        "{method} {path} answered {status} with {content:?}: {text}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).expect("error body is JSON");
    let error = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no error field in {json}"))
        .to_owned();
    (status, error)
}

thread_local! {
    /// Refusals per status sent by `expect`, to compare with the server's counters.
    static SENT: std::cell::RefCell<std::collections::BTreeMap<u16, u64>> = Default::default();
}

fn expect(case: &str, got: (u16, String), status: u16, mentions: &[&str]) {
    SENT.with(|sent| *sent.borrow_mut().entry(status).or_default() += 1);
    let (got_status, error) = got;
    assert_eq!(got_status, status, "{case}: {error}");
    for word in mentions {
        assert!(
            error.to_lowercase().contains(&word.to_lowercase()),
            "{case}: error {error:?} should mention {word:?}"
        );
    }
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn every_bad_input_gets_its_status_and_a_json_error() {
    let mut config = config();
    config.http.max_body_bytes = 1024;
    let server = Server::start(config).await;
    // A healthy subscriber on another channel watches everything below happen.
    let mut healthy = open_stream(server.addr, "/channel/healthy", &[]).await;
    let mut published = Vec::new();
    let mut publish_healthy = async |n: usize| {
        let data = format!(r#"{{"n":{n},"text":"line \"{n}\" ok"}}"#);
        server
            .publish(
                "/channel/healthy",
                &format!(r#"{{"event":"tick","data":{data}}}"#),
            )
            .await;
        published.push(data);
    };
    publish_healthy(0).await;

    let s = &server;
    let get = Method::GET;
    let post = Method::POST;

    // Routes and methods.
    expect(
        "unknown route",
        refused(s, get.clone(), "/nope", None, "").await,
        404,
        &["route"],
    );
    expect(
        "unknown nested route",
        refused(s, get.clone(), "/channel/a/b/c/d", None, "").await,
        404,
        &["route"],
    );
    expect(
        "DELETE a channel",
        refused(s, Method::DELETE, "/channel/news", None, "").await,
        405,
        &["DELETE"],
    );
    expect(
        "PUT status",
        refused(s, Method::PUT, "/status", JSON, "{}").await,
        405,
        &["PUT"],
    );
    expect(
        "GET the publish-to-all route",
        refused(s, get.clone(), "/channel", None, "").await,
        405,
        &["GET"],
    );
    publish_healthy(1).await;

    // Content types and sizes.
    let ok_body = r#"{"data":"x"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        expect(
            &format!("content type {content_type:?}"),
            refused(s, post.clone(), "/channel/news", content_type, ok_body).await,
            415,
            &["application/json"],
        );
    }
    for accepted in ["application/json; charset=utf-8", "Application/JSON"] {
        let response = s
            .http
            .post(s.url("/channel/news"))
            .header("content-type", accepted)
            .body(ok_body)
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 200, "{accepted} is accepted");
    }
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(2000));
    expect(
        "oversized body",
        refused(s, post.clone(), "/channel/news", JSON, &big).await,
        413,
        &["maxBodyBytes"],
    );
    publish_healthy(2).await;

    // Bodies.
    for (case, body, mentions) in [
        ("malformed JSON", r#"{"data": "#, &["JSON"][..]),
        ("not an object", r#"[1,2]"#, &["JSON"][..]),
        ("empty body", "", &["JSON"][..]),
        (
            "wrong type of event",
            r#"{"event":5,"data":1}"#,
            &["invalid type"][..],
        ),
        (
            "wrong type of retry",
            r#"{"data":1,"retry":"soon"}"#,
            &["invalid type"][..],
        ),
        (
            "negative retry",
            r#"{"data":1,"retry":-1}"#,
            &["invalid"][..],
        ),
        (
            "unknown field",
            r#"{"data":1,"colour":"red"}"#,
            &["unknown field", "colour"][..],
        ),
        (
            "unpaired surrogate in data",
            r#"{"data":{"text":"a\ud800b"}}"#,
            &["unpaired surrogate", "ud800"][..],
        ),
        (
            "missing data",
            r#"{"event":"x"}"#,
            &["missing field", "data"][..],
        ),
        (
            "event with CR",
            r#"{"data":1,"event":"a\rb"}"#,
            &["event", "control"][..],
        ),
        (
            "event with LF",
            r#"{"data":1,"event":"a\nb"}"#,
            &["event", "control"][..],
        ),
        (
            "event with NUL",
            r#"{"data":1,"event":"a\u0000b"}"#,
            &["event", "control"][..],
        ),
        (
            "event with U+2028",
            r#"{"data":1,"event":"a\u2028b"}"#,
            &["event", "separator"][..],
        ),
        (
            "id with CR",
            r#"{"data":1,"id":"a\rb"}"#,
            &["id", "control"][..],
        ),
        (
            "id with LF",
            r#"{"data":1,"id":"a\nb"}"#,
            &["id", "control"][..],
        ),
        (
            "id with NUL",
            r#"{"data":1,"id":"a\u0000b"}"#,
            &["id", "control"][..],
        ),
        (
            "id with U+2028",
            r#"{"data":1,"id":"a\u2028b"}"#,
            &["id", "separator"][..],
        ),
        (
            "empty event name",
            r#"{"data":1,"event":""}"#,
            &["event"][..],
        ),
    ] {
        for path in ["/channel/news", "/channel"] {
            expect(
                &format!("{case} to {path}"),
                refused(s, post.clone(), path, JSON, body).await,
                400,
                mentions,
            );
        }
    }
    let long_id = format!(r#"{{"data":1,"id":"{}"}}"#, "i".repeat(257));
    expect(
        "id too long",
        refused(s, post.clone(), "/channel/news", JSON, &long_id).await,
        400,
        &["id", "256"],
    );
    publish_healthy(3).await;

    // Names, on every route that takes them.
    let long = "c".repeat(129);
    for (case, name, mentions) in [
        ("slash", "a%2Fb", &["channel", "'/'"][..]),
        ("space", "a%20b", &["channel", "' '"][..]),
        ("too long", long.as_str(), &["channel", "128"][..]),
        ("non-ASCII", "caf%C3%A9", &["channel", "'é'"][..]),
        ("newline", "a%0Ab", &["channel"][..]),
        ("byte that is not UTF-8", "a%FFb", &["UTF-8"][..]),
    ] {
        let channel_path = format!("/channel/{name}");
        let client_path = format!("/channel/{name}/client/me");
        expect(
            &format!("subscribe to a channel with a {case}"),
            refused(s, get.clone(), &channel_path, None, "").await,
            400,
            mentions,
        );
        expect(
            &format!("publish to a channel with a {case}"),
            refused(s, post.clone(), &channel_path, JSON, ok_body).await,
            400,
            mentions,
        );
        expect(
            &format!("subscribe as a client on a channel with a {case}"),
            refused(s, get.clone(), &client_path, None, "").await,
            400,
            mentions,
        );
        let mut client_mentions = mentions.to_vec();
        client_mentions[0] = "client";
        let bad_client = format!("/channel/news/client/{name}");
        expect(
            &format!("subscribe as a client with a {case}"),
            refused(s, get.clone(), &bad_client, None, "").await,
            400,
            &client_mentions,
        );
        expect(
            &format!("publish to a client with a {case}"),
            refused(s, post.clone(), &bad_client, JSON, ok_body).await,
            400,
            &client_mentions,
        );
    }
    publish_healthy(4).await;

    // Conflicts and unknown targets.
    let _alice = open_stream(s.addr, "/channel/news/client/alice", &[]).await;
    expect(
        "taken client id",
        refused(s, get.clone(), "/channel/news/client/alice", None, "").await,
        409,
        &["alice", "already"],
    );
    expect(
        "publish to an unknown client",
        refused(s, post.clone(), "/channel/news/client/bob", JSON, ok_body).await,
        404,
        &["bob"],
    );
    publish_healthy(5).await;

    // The healthy subscriber got exactly its events, intact and in order.
    server
        .publish("/channel/healthy", r#"{"data":"end"}"#)
        .await;
    let got = events_until(&mut healthy, r#""end""#).await;
    assert_eq!(datas(&got), published);
    assert!(got.iter().all(|f| f.event.as_deref() == Some("tick")));
    // Every refusal was counted under its kind.
    let sent = SENT.with(|sent| sent.borrow().clone());
    for (status, kind) in [
        (400, "bad_request"),
        (404, "not_found"),
        (405, "method_not_allowed"),
        (409, "conflict"),
        (413, "payload_too_large"),
        (415, "unsupported_media_type"),
    ] {
        let counted = server
            .metric(&format!("sse_request_errors_total{{kind=\"{kind}\"}}"))
            .await;
        assert_eq!(Some(&counted), sent.get(&status), "{kind}");
    }
}

/// Issue 20 (7, 8): a publisher cannot send what subscribers would take for the
/// broker's own signals, a `retry` no browser can live with, or `data` that strict
/// JSON decoders refuse (too deep, a number too long or out of range). Each is a 400
/// naming the bound, on every publish route, and no subscriber sees any of it.
#[tokio::test]
async fn publishes_that_would_mislead_or_break_subscribers_get_400() {
    let mut config = config();
    config.http.max_body_bytes = 1 << 20;
    let server = Server::start(config).await;
    let s = &server;
    let mut watcher = open_stream(s.addr, "/channel/news/client/watcher", &[]).await;
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let cases = [
        (
            "reset",
            r#"{"event":"reset","data":1}"#.to_owned(),
            vec!["reserved", "reset"],
        ),
        (
            "gap",
            r#"{"event":"gap","data":1}"#.to_owned(),
            vec!["reserved", "gap"],
        ),
        (
            "overflow",
            r#"{"event":"overflow","data":1}"#.to_owned(),
            vec!["reserved", "overflow"],
        ),
        (
            "expired",
            r#"{"event":"expired","data":1}"#.to_owned(),
            vec!["reserved", "expired"],
        ),
        (
            "retry 2^64-1",
            r#"{"data":1,"retry":18446744073709551615}"#.to_owned(),
            vec!["retry", "600000"],
        ),
        (
            "retry 600001",
            r#"{"data":1,"retry":600001}"#.to_owned(),
            vec!["retry", "600000"],
        ),
        (
            "400,000 nested arrays",
            format!(r#"{{"data":{}}}"#, deep(400_000)),
            vec!["127 deep"],
        ),
        (
            "128 nested arrays",
            format!(r#"{{"data":{}}}"#, deep(128)),
            vec!["127 deep"],
        ),
        (
            "a 50,000-digit number",
            format!(r#"{{"data":{}}}"#, "7".repeat(50_000)),
            vec!["number", "at most 100"],
        ),
        (
            "an infinite number",
            r#"{"data":[1e400]}"#.to_owned(),
            vec!["number", "range"],
        ),
    ];
    for (case, body, mentions) in &cases {
        for path in ["/channel/news", "/channel", "/channel/news/client/watcher"] {
            expect(
                &format!("{case} to {path}"),
                refused(s, Method::POST, path, JSON, body).await,
                400,
                mentions,
            );
        }
    }
    // Just inside every bound is accepted and delivered as sent.
    let edge = format!(
        r#"{{"event":"Reset","retry":600000,"data":[{},{}]}}"#,
        deep(126),
        "9".repeat(100)
    );
    s.publish("/channel/news", &edge).await;
    s.publish("/channel/news", r#"{"data":"end"}"#).await;
    let got = events_until(&mut watcher, r#""end""#).await;
    assert_eq!(
        got.len(),
        1,
        "only the accepted event, before \"end\": {got:?}"
    );
    assert_eq!(got[0].event.as_deref(), Some("Reset"));
    assert_eq!(got[0].retry.as_deref(), Some("600000"));
    let data = got[0].data.as_deref().unwrap_or_default();
    assert_eq!(data.len(), 2 + 2 * 126 + 1 + 100, "{data}");
    assert_eq!(s.metric("sse_events_published_total").await, 2);
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let limit = 3;
    let mut config = config();
    config.http.max_connections = limit;
    let server = Server::start(config).await;
    let mut streams = Vec::new();
    for _ in 0..limit {
        streams.push(open_stream(server.addr, "/channel/full", &[]).await);
    }
    // A fresh connection (its own client, so no pooled one is reused) is one too many.
    let fresh = reqwest::Client::new();
    for path in ["/channel/full", "/channel/other"] {
        let response = fresh.get(server.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 503, "{path}");
        let json: serde_json::Value = response.json().await.expect("JSON error");
        let error = json["error"].as_str().expect("error field");
        assert!(error.contains("limit of 3 connections"), "{error}");
    }
    let response = fresh
        .post(server.url("/channel/full"))
        .header("content-type", "application/json")
        .body(r#"{"data":1}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 503);
    // Health stays reachable for orchestrators even when the node is full.
    let health = fresh.get(server.url("/healthz")).send().await.expect("GET");
    assert_eq!(health.status(), 200);

    // Once a stream closes (and this client's idle connection is gone) there is room.
    drop(fresh);
    drop(streams.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = RawStream::get(server.addr, "/channel/full", &[]).await;
        if stream.status == 200 {
            assert!(stream
                .next_block()
                .await
                .is_some_and(|b| b.starts_with("retry:")));
            break;
        }
        assert_eq!(stream.status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A client whose connections come from another loopback address (127.0.0.2): it
/// does not share the per-address count of the tests' usual 127.0.0.1.
fn client_from_other_address() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client")
}

/// Where refusals for `--http.server.maxConnectionsPerAddress` are counted among
/// refused requests.
const REFUSED_KIND: &str = "sse_request_errors_total{kind=\"too_many_connections_from_address\"}";

#[tokio::test]
async fn connections_over_the_per_address_limit_get_429_and_others_are_served() {
    let limit = 3;
    let mut config = config();
    config.http.max_connections_per_address = limit;
    let server = Server::start(config).await;
    let other = client_from_other_address();
    let metric = |name: &'static str| {
        let (other, url) = (other.clone(), server.url("/metrics"));
        async move { crate::common::metrics::scrape(&other, &url, name).await }
    };
    let mut streams = Vec::new();
    for _ in 0..limit {
        streams.push(open_stream(server.addr, "/channel/per-address", &[]).await);
    }
    // The fourth connection from 127.0.0.1 is answered at once, before any handler:
    // a subscribe that would otherwise have succeeded.
    let mut fourth = RawStream::get(server.addr, "/channel/per-address", &[]).await;
    assert_eq!(fourth.status, 429, "{:?}", fourth.headers);
    assert_eq!(fourth.header("connection"), Some("close"));
    assert_eq!(fourth.header("content-type"), Some("application/json"));
    let body = fourth.read_to_end(WAIT).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    let error = json["error"].as_str().expect("error field");
    assert!(error.contains("limit 3"), "{error}");
    assert_eq!(metric("sse_connections_refused_per_address_total").await, 1);
    assert_eq!(
        metric(REFUSED_KIND).await,
        1,
        "429s are refused requests too"
    );
    assert_eq!(metric("sse_subscribers").await, limit as u64);
    // Any request, not only subscribes, is refused on that address.
    let own = reqwest::Client::new();
    let response = own.get(server.url("/healthz")).send().await.expect("GET");
    assert_eq!(response.status(), 429);
    drop(own);

    // Other addresses are served, and the open streams still get events.
    let answer = other
        .post(server.url("/channel/per-address"))
        .header("content-type", "application/json")
        .body(r#"{"data":"still here"}"#)
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 200);
    for stream in &mut streams {
        let event = stream.next_event().await.expect("event");
        assert_eq!(event.data.as_deref(), Some("\"still here\""));
    }

    // Closing one stream makes room for one more from 127.0.0.1.
    drop(streams.pop());
    let mut refusals = 2;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut again = loop {
        let stream = RawStream::get(server.addr, "/channel/per-address", &[]).await;
        if stream.status == 200 {
            break stream;
        }
        assert_eq!(stream.status, 429);
        refusals += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(again
        .next_block()
        .await
        .is_some_and(|b| b.starts_with("retry:")));
    assert_eq!(
        metric("sse_connections_refused_per_address_total").await,
        refusals
    );
    assert_eq!(metric(REFUSED_KIND).await, refusals);
    assert_eq!(metric("sse_subscribers").await, limit as u64);
}
