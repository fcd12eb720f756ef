//! Bulk publishes: `application/x-ndjson` bodies, one event a line, applied all or
//! nothing and answered one line per event.

use std::collections::BTreeMap;

use serde_json::Value;
use sse_cluster::clock::Clock;

use crate::common::server::*;

const NDJSON: &str = "application/x-ndjson";

/// Sends a bulk publish; returns the status, the answer's content type and its body.
async fn post_bulk(server: &Server, path: &str, body: &str) -> (u16, String, String) {
    let response = server
        .http
        .post(server.url(path))
        .header("content-type", NDJSON)
        .body(body.to_owned())
        .send()
        .await
        .expect("bulk publish request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("answer"))
}

/// A bulk publish that must succeed: its answer lines, parsed.
async fn bulk(server: &Server, path: &str, body: &str) -> Vec<Value> {
    let (status, content_type, text) = post_bulk(server, path, body).await;
    assert_eq!(status, 200, "bulk publish to {path} failed: {text}");
    assert_eq!(content_type, NDJSON);
    assert!(text.ends_with('\n'), "every answer line ends: {text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("answer line is JSON"))
        .collect()
}

/// A refused bulk publish: its status and error message.
async fn refused_bulk(server: &Server, path: &str, body: &str) -> (u16, String) {
    let (status, _, text) = post_bulk(server, path, body).await;
    let json: Value = serde_json::from_str(&text).expect("error is JSON");
    let message = json["error"].as_str().expect("error message").to_owned();
    (status, message)
}

/// Subscribes and reads through the opening cursor.
async fn subscribed(server: &Server, path: &str) -> RawStream {
    let mut stream = open_stream(server.addr, path, &[]).await;
    stream.next_block().await.expect("opening cursor");
    stream
}

#[tokio::test]
async fn a_bulk_publish_delivers_every_line_in_order_and_answers_each() {
    let server = Server::start(config()).await;
    let mut stream = subscribed(&server, "/channel/news").await;
    let body = concat!(
        "{\"data\":{\"n\":1}}\n",
        "{\"id\":\"k2\",\"event\":\"update\",\"data\":\"two\"}\r\n",
        "\n",
        "{\"data\":[3, 3],\"retry\":2500}\n",
        "{\"data\":4}",
    );
    let answers = bulk(&server, "/channel/news", body).await;
    assert_eq!(answers.len(), 4, "{answers:?}");
    for answer in &answers {
        assert_eq!(answer["delivered"], 1, "{answer}");
        assert_eq!(answer["duplicate"], false, "{answer}");
        assert!(answer.get("channels").is_none(), "{answer}");
    }
    server.publish("/channel/news", r#"{"data":"end"}"#).await;
    let frames = events_until(&mut stream, "\"end\"").await;
    assert_eq!(datas(&frames), [r#"{"n":1}"#, r#""two""#, "[3,3]", "4"]);
    assert_eq!(frames[1].event.as_deref(), Some("update"));
    assert_eq!(frames[2].retry.as_deref(), Some("2500"));
    // Each answer's cursor is its event's `id:`.
    let cursors: Vec<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    let ids: Vec<&str> = frames.iter().map(|f| f.id.as_deref().unwrap()).collect();
    assert_eq!(cursors, ids);
}

#[tokio::test]
async fn ids_are_delivered_once_within_a_batch_and_across_batches() {
    let server = Server::start(config()).await;
    let mut stream = subscribed(&server, "/channel/orders").await;
    let first = bulk(
        &server,
        "/channel/orders",
        "{\"id\":\"a\",\"data\":\"a\"}\n{\"id\":\"b\",\"data\":\"b\"}\n{\"id\":\"a\",\"data\":\"a again\"}\n",
    )
    .await;
    let duplicates: Vec<&Value> = first.iter().map(|a| &a["duplicate"]).collect();
    assert_eq!(duplicates, [false, false, true]);
    assert_eq!(
        first[2]["id"], first[0]["id"],
        "a retry gets the original cursor"
    );
    assert_eq!(first[2]["delivered"], 0);
    // A retry of the whole request, with one new event.
    let second = bulk(
        &server,
        "/channel/orders",
        "{\"id\":\"a\",\"data\":\"a\"}\n{\"id\":\"b\",\"data\":\"b\"}\n{\"id\":\"c\",\"data\":\"c\"}\n",
    )
    .await;
    let duplicates: Vec<&Value> = second.iter().map(|a| &a["duplicate"]).collect();
    assert_eq!(duplicates, [true, true, false]);
    assert_eq!(second[0]["id"], first[0]["id"]);
    assert_eq!(second[1]["id"], first[1]["id"]);
    // And a single publish sees the ids a batch took.
    let single = server
        .publish("/channel/orders", r#"{"id":"c","data":"c"}"#)
        .await;
    assert_eq!(single["duplicate"], true);
    assert_eq!(single["id"], second[2]["id"]);
    server.publish("/channel/orders", r#"{"data":"end"}"#).await;
    let frames = events_until(&mut stream, "\"end\"").await;
    assert_eq!(datas(&frames), [r#""a""#, r#""b""#, r#""c""#]);
    assert_eq!(server.metric("sse_events_duplicate_total").await, 4);
}

#[tokio::test]
async fn a_bad_line_refuses_the_whole_request_and_nothing_is_delivered_or_kept() {
    let server = Server::start(config()).await;
    let mut stream = subscribed(&server, "/channel/news").await;
    let reserved = r#"{"event":"reset","data":1}"#;
    let (status, single) = server.post("/channel/news", reserved).await;
    assert_eq!(status, 400);
    let single = single["error"].as_str().expect("message");
    // The bad line is the fourth: the blank third line counts.
    let body =
        format!("{{\"id\":\"k\",\"data\":1}}\n{{\"data\":2}}\n\n{reserved}\n{{\"data\":}}\n");
    let (status, message) = refused_bulk(&server, "/channel/news", &body).await;
    assert_eq!(status, 400);
    assert_eq!(message, format!("line 4: {single}"));
    for (case, body, line, mentions) in [
        (
            "malformed JSON",
            "{\"data\":1}\n{\"data\": \n",
            2,
            "invalid JSON",
        ),
        (
            "unknown field",
            "{\"data\":1,\"channel\":\"x\"}\n",
            1,
            "unknown field",
        ),
        (
            "retry",
            "{\"data\":1}\n{\"data\":1,\"retry\":600001}\n",
            2,
            "retry",
        ),
        (
            "id",
            "{\"data\":1}\n{\"data\":1,\"id\":\"a\\nb\"}\n",
            2,
            "control",
        ),
        (
            "depth",
            &format!("{{\"data\":{}{}}}\n", "[".repeat(200), "]".repeat(200)),
            1,
            "deep",
        ),
    ] {
        let (status, message) = refused_bulk(&server, "/channel/news", body).await;
        assert_eq!(status, 400, "{case}: {message}");
        assert!(
            message.starts_with(&format!("line {line}: ")) && message.contains(mentions),
            "{case}: {message}"
        );
    }
    let (status, message) = refused_bulk(&server, "/channel/news", "\n\n").await;
    assert_eq!(
        (status, message.contains("no events")),
        (400, true),
        "{message}"
    );
    // Nothing of any of them was accepted, kept or delivered, the valid lines
    // before the bad one included: the id `k` is still free.
    assert_eq!(server.metric("sse_events_published_total").await, 0);
    assert_eq!(server.metric("sse_history_events").await, 0);
    let answer = server
        .publish("/channel/news", r#"{"id":"k","data":"end"}"#)
        .await;
    assert_eq!(answer["duplicate"], false);
    assert!(events_until(&mut stream, "\"end\"").await.is_empty());
}

#[tokio::test]
async fn a_bulk_publish_to_every_channel_reaches_each_channel_in_order() {
    let server = Server::start(config()).await;
    let mut streams = BTreeMap::new();
    for channel in ["a", "b"] {
        streams.insert(
            channel,
            subscribed(&server, &format!("/channel/{channel}")).await,
        );
    }
    let answers = bulk(
        &server,
        "/channel",
        "{\"id\":\"n1\",\"data\":1}\n{\"data\":2}\n{\"id\":\"n1\",\"data\":1}\n{\"data\":3}\n",
    )
    .await;
    let shapes: Vec<(Value, Value, Value)> = answers
        .iter()
        .map(|a| {
            (
                a["channels"].clone(),
                a["delivered"].clone(),
                a["duplicate"].clone(),
            )
        })
        .collect();
    let new = (Value::from(2), Value::from(2), Value::from(false));
    let duplicate = (Value::from(0), Value::from(0), Value::from(true));
    assert_eq!(shapes, [new.clone(), new.clone(), duplicate, new]);
    server.publish("/channel", r#"{"data":"end"}"#).await;
    for (channel, stream) in &mut streams {
        let frames = events_until(stream, "\"end\"").await;
        assert_eq!(datas(&frames), ["1", "2", "3"], "channel {channel}");
    }
}

#[tokio::test]
async fn a_bulk_publish_to_one_client_reaches_only_that_client() {
    let server = Server::start(config()).await;
    let mut alice = subscribed(&server, "/channel/room/client/alice").await;
    let mut bob = subscribed(&server, "/channel/room/client/bob").await;
    let answers = bulk(
        &server,
        "/channel/room/client/alice",
        "{\"data\":1}\n{\"data\":2}\n",
    )
    .await;
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a["delivered"] == 1), "{answers:?}");
    server.publish("/channel/room", r#"{"data":"end"}"#).await;
    assert_eq!(
        datas(&events_until(&mut alice, "\"end\"").await),
        ["1", "2"]
    );
    assert!(events_until(&mut bob, "\"end\"").await.is_empty());
    let (status, message) =
        refused_bulk(&server, "/channel/room/client/carol", "{\"data\":1}\n").await;
    assert_eq!(status, 404, "{message}");
}

#[tokio::test]
async fn bulk_bodies_have_their_own_limit_and_each_line_the_single_one() {
    let mut config = config();
    config.http.max_body_bytes = 256;
    config.http.max_bulk_bytes = 1024;
    config.broker.subscriber_buffer = 4;
    let server = Server::start(config).await;
    let line = |n: usize, len: usize| format!("{{\"data\":\"{n}{}\"}}\n", "x".repeat(len));
    // Four lines of 200 bytes: more than one publish body may be, within a bulk one.
    let body: String = (0..4).map(|n| line(n, 185)).collect();
    assert!(body.len() > 256 && body.len() <= 1024);
    assert_eq!(bulk(&server, "/channel/news", &body).await.len(), 4);
    let (status, message) = refused_bulk(
        &server,
        "/channel/news",
        &format!("{}{}", line(0, 10), line(1, 300)),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        message.starts_with("line 2: ") && message.contains("--http.server.maxBodyBytes"),
        "{message}"
    );
    let body: String = (0..6).map(|n| line(n, 185)).collect();
    let (status, message) = refused_bulk(&server, "/channel/news", &body).await;
    assert_eq!(status, 413);
    assert!(message.contains("--http.server.maxBulkBytes"), "{message}");
    // At most --subscriber.buffer events: a subscriber takes a whole request.
    let body: String = (0..5).map(|n| line(n, 1)).collect();
    let (status, message) = refused_bulk(&server, "/channel/news", &body).await;
    assert_eq!(status, 413);
    assert!(
        message.starts_with("line 5: more than 4 events"),
        "{message}"
    );
    assert_eq!(server.metric("sse_events_published_total").await, 4);
    // A JSON body is held to its own limit still.
    let (status, error) = server.post("/channel/news", &line(0, 300)).await;
    assert_eq!(status, 413, "{error}");
}

#[tokio::test]
async fn other_content_types_are_still_refused() {
    let server = Server::start(config()).await;
    let response = server
        .http
        .post(server.url("/channel/news"))
        .header("content-type", "text/plain")
        .body("{\"data\":1}\n{\"data\":2}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 415);
    let json: Value = response.json().await.expect("JSON error");
    let message = json["error"].as_str().expect("message");
    assert!(message.contains("application/x-ndjson"), "{message}");
    // Parameters are fine, as for JSON.
    let response = server
        .http
        .post(server.url("/channel/news"))
        .header("content-type", "application/x-ndjson; charset=utf-8")
        .body("{\"data\":1}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

/// The answer's shape, cursors redacted: one line per event, in order.
#[tokio::test]
async fn wire_bulk_answer() {
    let server = Server::start_with(config(), 0x5eed, Clock::starting_at(1_700_000_000_000)).await;
    let _stream = subscribed(&server, "/channel/news").await;
    let (status, _, text) = post_bulk(
        &server,
        "/channel/news",
        "{\"id\":\"a\",\"data\":1}\n{\"data\":2}\n{\"id\":\"a\",\"data\":1}\n",
    )
    .await;
    assert_eq!(status, 200);
    // The bytes as sent, the wall-clock part of each cursor redacted.
    let mut redacted = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(r#""id":""#) {
        let (before, after) = rest.split_at(at + 6);
        redacted.push_str(before);
        redacted.push_str("[time]");
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    redacted.push_str(rest);
    insta::assert_snapshot!("bulk_answer", redacted);
}

/// At most `BULK_PUBLISHES_AT_ONCE` bulk bodies are read at once: the next one waits
/// for a turn, and gets one as soon as a request in progress ends.
#[tokio::test]
async fn bulk_publishes_past_the_number_read_at_once_wait_for_a_turn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _heavy = HEAVY.lock().await;
    let server = Server::start(config()).await;
    let body = "{\"data\":1}\n";
    let head = format!(
        "POST /channel/news HTTP/1.1\r\nHost: test\r\nContent-Type: {NDJSON}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Heads sent, bodies held back: each holds a turn.
    let mut held = Vec::new();
    for _ in 0..sse_cluster::http::BULK_PUBLISHES_AT_ONCE {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        held.push(socket);
    }
    // Every held request has its turn before the next comes.
    server
        .wait_metric("sse_open_connections", |n| {
            n >= sse_cluster::http::BULK_PUBLISHES_AT_ONCE as u64
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let next = {
        let (http, url) = (server.http.clone(), server.url("/channel/news"));
        tokio::spawn(async move {
            http.post(url)
                .header("content-type", NDJSON)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !next.is_finished(),
        "a bulk publish was read past the bound"
    );
    assert_eq!(server.metric("sse_events_published_total").await, 0);
    // One held request completes: its turn goes to the one waiting.
    let mut first = held.remove(0);
    first.write_all(body.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let status = tokio::time::timeout(WAIT, next)
        .await
        .expect("its turn came");
    assert_eq!(status.unwrap().unwrap(), 200);
}
