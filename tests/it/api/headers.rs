//! Issue 20 (9): the headers a security scanner expects of a JSON API that browsers
//! reach, on every kind of answer: JSON from the router, errors, the event stream
//! the server writes by hand, and the refusals it writes before any routing.

use crate::common::server::*;

const NO_SNIFF: (&str, &str) = ("x-content-type-options", "nosniff");
/// What every answer but an event stream carries besides `nosniff`.
const NOT_A_PAGE: [(&str, &str); 3] = [
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
];

fn assert_headers(case: &str, stream: &RawStream, status: u16, expected: &[(&str, &str)]) {
    assert_eq!(stream.status, status, "{case}: {:?}", stream.headers);
    for (name, value) in expected {
        assert_eq!(
            stream.header(name),
            Some(*value),
            "{case}: {name} in {:?}",
            stream.headers
        );
    }
}

#[tokio::test]
async fn every_answer_says_nosniff_and_json_answers_are_neither_stored_nor_framed() {
    let server = Server::start(config()).await;
    let json_answer: Vec<(&str, &str)> = [NO_SNIFF].into_iter().chain(NOT_A_PAGE).collect();

    // Through the router (hyper): JSON, Prometheus text, errors.
    for (path, status) in [
        ("/status", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/nope", 404),
    ] {
        let stream = RawStream::get(server.addr, path, &[]).await;
        assert_headers(&format!("GET {path}"), &stream, status, &json_answer);
    }
    for (body, status) in [(r#"{"data":1}"#, 200), (r#"{"data":"#, 400)] {
        let response = server
            .http
            .post(server.url("/channel/news"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), status, "{body}");
        for (name, value) in json_answer.iter() {
            assert_eq!(
                response.headers().get(*name).and_then(|v| v.to_str().ok()),
                Some(*value),
                "publish {body}: {name}"
            );
        }
    }

    // The event stream, written on the socket by the server itself: nosniff, and
    // its own cache rule kept.
    let stream = RawStream::get(server.addr, "/channel/news", &[]).await;
    assert_headers(
        "the event stream",
        &stream,
        200,
        &[
            NO_SNIFF,
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
    );
    assert_eq!(stream.header("x-frame-options"), None);
    // A refused subscribe, answered on the same direct path.
    let stream = RawStream::get(server.addr, "/channel/a%20b", &[]).await;
    assert_headers("a refused subscribe", &stream, 400, &json_answer);
    // A refusal written before routing: a request head over the limit (431).
    let big = "x".repeat(20 * 1024);
    let stream = RawStream::get(server.addr, "/status", &[("x-big", &big)]).await;
    assert_headers("an oversized head", &stream, 431, &json_answer);
}
