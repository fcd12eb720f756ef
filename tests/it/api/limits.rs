//! Node limits over real sockets: channels per node (`--channels.max`), replay
//! history bytes per node (`--replay.maxBytes`) and the time a client has to send a
//! request body (`--http.server.bodyTimeout`).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::server::*;

/// Subscribes with a fresh connection and returns the status and the JSON error (an
/// accepted stream is not read: its body never ends).
async fn refused_subscribe(server: &Server, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    if status == 200 {
        return (status, serde_json::Value::Null);
    }
    (status, response.json().await.expect("JSON error"))
}

#[tokio::test]
async fn at_the_channel_limit_a_new_channel_gets_503_until_one_is_free() {
    let mut config = config();
    config.broker.max_channels = 3;
    let server = Server::start(config).await;
    let mut streams = Vec::new();
    for channel in ["c1", "c2", "c3"] {
        streams.push(open_stream(server.addr, &format!("/channel/{channel}"), &[]).await);
    }
    let (status, json) = refused_subscribe(&server, "/channel/c4").await;
    assert_eq!(status, 503, "{json}");
    let error = json["error"].as_str().expect("JSON error");
    assert!(
        error.contains("limit of 3 channels") && error.contains("--channels.max"),
        "{error}"
    );
    let (status, json) = server.post("/channel/c4", r#"{"data":1}"#).await;
    assert_eq!(status, 503, "{json}");
    assert!(json["error"]
        .as_str()
        .is_some_and(|e| e.contains("limit of 3 channels")));
    assert_eq!(server.metric("sse_channels_refused_total").await, 2);
    // Channels that exist are not affected.
    server
        .publish("/channel/c1", r#"{"data":"still here"}"#)
        .await;
    let event = streams[0].next_event().await.expect("event");
    assert_eq!(event.data.as_deref(), Some(r#""still here""#));

    // c3 had no history: it goes with its subscriber, and c4 fits.
    drop(streams.pop());
    server.wait_metric("sse_subscribers", |v| v == 2).await;
    let mut c4 = open_stream(server.addr, "/channel/c4", &[]).await;
    assert!(c4.next_block().await.is_some_and(|b| b.starts_with("id: ")));

    // c1 has history: without subscribers it is kept, until a new channel needs room.
    drop(streams.remove(0));
    server.wait_metric("sse_dormant_channels", |v| v == 1).await;
    let _c5 = open_stream(server.addr, "/channel/c5", &[]).await;
    assert_eq!(server.metric("sse_channels_evicted_total").await, 1);
    assert_eq!(server.metric("sse_dormant_channels").await, 0);
    assert_eq!(server.metric("sse_channels").await, 3);
}

#[tokio::test]
async fn history_over_the_byte_limit_goes_oldest_first_and_a_resume_from_before_gets_reset() {
    let max_bytes = 4096;
    let mut config = config();
    config.broker.replay_max_bytes = max_bytes;
    config.http.max_body_bytes = 1024;
    let server = Server::start(config).await;
    let first = server.publish("/channel/old", r#"{"data":"o1"}"#).await;
    server.publish("/channel/old", r#"{"data":"o2"}"#).await;
    let padding = "x".repeat(800);
    let mut busy = Vec::new();
    for n in 0..8 {
        let answer = server
            .publish("/channel/busy", &format!(r#"{{"data":"{n}{padding}"}}"#))
            .await;
        busy.push(answer["id"].as_str().expect("cursor").to_owned());
    }
    let history = server.metric("sse_history_bytes").await;
    assert!(history > 0 && history <= max_bytes as u64, "{history}");
    // The old channel's events were the node's oldest: gone first.
    assert!(server.metric("sse_replay_evicted_events_total").await >= 2 + 4);
    let cursor = first["id"].as_str().expect("cursor");
    let mut stream = open_stream(server.addr, "/channel/old", &[("Last-Event-ID", cursor)]).await;
    let reset = Frame::parse(&stream.next_block().await.expect("reset"));
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    let after = Frame::parse(&stream.next_block().await.expect("cursor block"));
    assert_eq!(after.data, None, "nothing of o2 remains: {after:?}");

    // A resume the history still covers is exact: the last busy event, no reset.
    let mut stream =
        open_stream(server.addr, "/channel/busy", &[("Last-Event-ID", &busy[6])]).await;
    let replayed = Frame::parse(&stream.next_block().await.expect("replayed"));
    assert_eq!(replayed.event, None, "{replayed:?}");
    assert!(replayed.data.is_some_and(|d| d.starts_with("\"7x")));
}

/// The body deadline of the nodes below: short, so the tests are quick.
const BODY_TIMEOUT: Duration = Duration::from_millis(300);

/// How late after the deadline an answer may come on a busy machine.
const SLACK: Duration = Duration::from_secs(2);

const BODY_TIMEOUTS: &str = "sse_request_errors_total{kind=\"body_timeout\"}";

async fn body_timeout_server() -> Server {
    let mut config = config();
    config.http.body_timeout = BODY_TIMEOUT;
    Server::start(config).await
}

/// Reads until the server closes the connection (a reset counts as a close) and
/// returns what it sent.
async fn read_until_closed(socket: &mut (impl AsyncRead + Unpin)) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8(answer).expect("UTF-8 answer")
}

/// Checks a whole answer: the 408 head, `Connection: close` and the JSON error.
fn assert_body_timeout_answer(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON error");
    let error = json["error"].as_str().expect("error field");
    assert!(error.contains("--http.server.bodyTimeout"), "{error}");
}

#[tokio::test]
async fn a_publish_body_not_received_in_time_gets_408_and_the_connection_is_closed() {
    let server = body_timeout_server().await;
    let mut subscriber = open_stream(server.addr, "/channel/slow-body", &[]).await;
    let body = r#"{"data":"never complete"}"#;
    for (case, head, part) in [
        (
            "Content-Length",
            request_head(
                "POST",
                "/channel/slow-body",
                &[
                    ("Content-Type", "application/json"),
                    ("Content-Length", &body.len().to_string()),
                ],
            ),
            body[..10].to_owned(),
        ),
        (
            "chunked, last chunk withheld",
            request_head(
                "POST",
                "/channel/slow-body",
                &[
                    ("Content-Type", "application/json"),
                    ("Transfer-Encoding", "chunked"),
                ],
            ),
            format!("{:x}\r\n{body}\r\n", body.len()),
        ),
    ] {
        let mut socket = TcpStream::connect(server.addr).await.expect("connect");
        let sent = Instant::now();
        socket
            .write_all(format!("{head}{part}").as_bytes())
            .await
            .expect("send");
        let answer = read_until_closed(&mut socket).await;
        let took = sent.elapsed();
        println!("{case}: 408 and close after {took:?}");
        assert_body_timeout_answer(&answer);
        assert!(
            took >= BODY_TIMEOUT && took < BODY_TIMEOUT + SLACK,
            "{case}: answered after {took:?}"
        );
    }
    assert_eq!(server.metric(BODY_TIMEOUTS).await, 2);
    assert_eq!(server.metric("sse_events_published_total").await, 0);
    // Nothing of either body reached the channel; the stream is still fine.
    server
        .publish("/channel/slow-body", r#"{"data":"next"}"#)
        .await;
    let event = subscriber.next_event().await.expect("event");
    assert_eq!(event.data.as_deref(), Some(r#""next""#));
}

/// The deadline is for the whole body: a client that keeps sending, one byte at a
/// time well within the deadline, is cut off all the same.
#[tokio::test]
async fn a_body_trickled_past_the_deadline_is_cut_off_though_bytes_keep_coming() {
    let server = body_timeout_server().await;
    let head = request_head(
        "POST",
        "/channel/trickle",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "100000"),
        ],
    );
    let socket = TcpStream::connect(server.addr).await.expect("connect");
    let (mut read, mut write) = socket.into_split();
    let sent = Instant::now();
    write.write_all(head.as_bytes()).await.expect("send head");
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let answer = read_until_closed(&mut read).await;
    let took = sent.elapsed();
    trickle.abort();
    assert!(
        took >= BODY_TIMEOUT && took < BODY_TIMEOUT + SLACK,
        "closed after {took:?}"
    );
    // The server closes with the client's latest bytes unread, so the kernel may
    // reset the connection and drop the answer; when it arrived, it is the 408.
    let status = answer.lines().next().unwrap_or("(reset before the answer)");
    println!("trickle: closed after {took:?}: {status}");
    if !answer.is_empty() {
        assert_body_timeout_answer(&answer);
    }
    assert_eq!(server.metric(BODY_TIMEOUTS).await, 1);
}

#[tokio::test]
async fn a_body_that_arrives_within_the_deadline_is_published() {
    let server = body_timeout_server().await;
    let mut subscriber = open_stream(server.addr, "/channel/in-time", &[]).await;
    let body = r#"{"data":"in time"}"#;
    let head = request_head(
        "POST",
        "/channel/in-time",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &body.len().to_string()),
            ("Connection", "close"),
        ],
    );
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    socket
        .write_all(format!("{head}{}", &body[..5]).as_bytes())
        .await
        .expect("send");
    tokio::time::sleep(BODY_TIMEOUT / 2).await;
    socket.write_all(&body.as_bytes()[5..]).await.expect("send");
    let answer = read_until_closed(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let event = subscriber.next_event().await.expect("event");
    assert_eq!(event.data.as_deref(), Some(r#""in time""#));
    assert_eq!(server.metric(BODY_TIMEOUTS).await, 0);
}

/// Routes that read no body (here `/healthz`; also the relay and subscribe routes)
/// answer at once, and the connection does not wait for the body either.
#[tokio::test]
async fn a_route_that_reads_no_body_answers_and_closes_without_waiting_for_one() {
    let server = Server::start(config()).await;
    let head = request_head("GET", "/healthz", &[("Content-Length", "1000")]);
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let sent = Instant::now();
    socket.write_all(head.as_bytes()).await.expect("send");
    let answer = read_until_closed(&mut socket).await;
    let took = sent.elapsed();
    println!("GET with a withheld body: answered and closed after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(took < SLACK, "held for {took:?} (the body deadline is 10s)");
}
