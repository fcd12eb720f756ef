//! The stream itself: it opens at once, keeps alive, frames events exactly, and the
//! publish answer says what happened.

use std::time::Duration;

use tokio::time::Instant;

use crate::common::server::*;

#[tokio::test]
async fn stream_opens_at_once_before_any_publish() {
    let mut config = config();
    config.http.retry = Duration::from_millis(2500);
    let server = Server::start(config).await;
    let started = Instant::now();
    let mut stream = RawStream::get(server.addr, "/channel/quiet", &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    let first = stream
        .next_block_within(Duration::from_secs(2))
        .await
        .expect("first block");
    assert_eq!(first, "retry: 2500\n\n");
    let cursor = Frame::parse(&stream.next_block().await.expect("cursor block"));
    assert!(cursor.id.is_some() && cursor.data.is_none(), "{cursor:?}");
    // Nothing was published, yet the opening arrived well before any keep-alive (15s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn keep_alive_comments_arrive_at_the_configured_interval() {
    let interval = Duration::from_millis(300);
    let mut config = config();
    config.http.keep_alive = interval;
    let server = Server::start(config).await;
    let mut stream = open_stream(server.addr, "/channel/idle", &[]).await;
    stream.next_block().await.expect("cursor block");
    let opened = Instant::now();
    let mut arrivals = Vec::new();
    while arrivals.len() < 4 {
        let block = stream.next_block().await.expect("keep-alive");
        assert_eq!(block, ": keep-alive\n\n");
        arrivals.push(opened.elapsed());
    }
    // The first comes one interval after opening, the rest one interval apart: never
    // sooner, and (allowing for a loaded machine) not much later.
    assert!(
        arrivals[0] >= interval - Duration::from_millis(50),
        "{arrivals:?}"
    );
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval - Duration::from_millis(50),
            "{arrivals:?}"
        );
    }
    assert!(arrivals[3] < interval * 4 * 3, "{arrivals:?}");
}

#[tokio::test]
async fn events_are_framed_with_compact_json_and_publish_answers_say_what_happened() {
    let server = Server::start(config()).await;
    let mut one = open_stream(server.addr, "/channel/frames", &[]).await;
    let mut two = open_stream(server.addr, "/channel/frames", &[]).await;
    one.next_block().await.expect("cursor");
    two.next_block().await.expect("cursor");

    let answer = server
        .publish(
            "/channel/frames",
            r#"{ "event": "order", "data": { "items": [ 1, 2.50, {"sku": "a b"} ], "note": "say \"hi\"" } }"#,
        )
        .await;
    assert_eq!(answer["delivered"], 2);
    assert_eq!(answer["duplicate"], false);
    let id = answer["id"]
        .as_str()
        .expect("cursor in the answer")
        .to_owned();
    let plain = server
        .publish("/channel/frames", r#"{"data":"hello"}"#)
        .await;
    let with_retry = server
        .publish("/channel/frames", r#"{"data":[true,null],"retry":1234}"#)
        .await;

    for stream in [&mut one, &mut two] {
        let block = stream.next_block().await.expect("event");
        assert_eq!(
            block,
            format!(
                "id: {id}\nevent: order\ndata: {{\"items\":[1,2.50,{{\"sku\":\"a b\"}}],\"note\":\"say \\\"hi\\\"\"}}\n\n"
            )
        );
        let block = stream.next_block().await.expect("event");
        assert_eq!(
            block,
            format!(
                "id: {}\ndata: \"hello\"\n\n",
                plain["id"].as_str().expect("id")
            )
        );
        let block = stream.next_block().await.expect("event");
        assert_eq!(
            block,
            format!(
                "id: {}\nretry: 1234\ndata: [true,null]\n\n",
                with_retry["id"].as_str().expect("id")
            )
        );
    }
    // Nobody listens on another channel: accepted, delivered to no one.
    let answer = server.publish("/channel/empty", r#"{"data":1}"#).await;
    assert_eq!(answer["delivered"], 0);
    assert_eq!(answer["duplicate"], false);
    assert!(answer["id"].is_string());
    let keys: Vec<&String> = answer.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "{answer}");
}

/// An event for subscribers that are waiting with nothing to write goes straight to
/// their sockets from the publish itself, every one of them: the publish writes them
/// all in one poll of its task, and none may be turned away (and left to the
/// subscriber's own task) while its socket has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_writes_to_every_waiting_subscriber_itself() {
    const SUBSCRIBERS: usize = 300;
    const EVENTS: usize = 5;
    let _heavy = HEAVY.lock().await;
    let server = Server::start(config()).await;
    let mut streams = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut stream = open_stream(server.addr, "/channel/wide", &[]).await;
        stream.next_block().await.expect("cursor block");
        streams.push(stream);
    }
    // Every stream has written its opening and waits for events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let direct = "sse_events_written_directly_total";
    let delivered = "sse_events_delivered_total";
    let (direct_before, delivered_before) =
        (server.metric(direct).await, server.metric(delivered).await);
    for n in 0..EVENTS {
        let answer = server
            .publish("/channel/wide", &format!(r#"{{"data":"e{n}"}}"#))
            .await;
        assert_eq!(answer["delivered"], SUBSCRIBERS, "{answer}");
        // Each stream reads it before the next publish, so every subscriber is
        // waiting again when it comes.
        for stream in &mut streams {
            let frame = stream.next_event().await.expect("event");
            assert_eq!(frame.data.as_deref(), Some(format!("\"e{n}\"").as_str()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = (SUBSCRIBERS * EVENTS) as u64;
    assert_eq!(server.metric(delivered).await - delivered_before, expected);
    assert_eq!(
        server.metric(direct).await - direct_before,
        expected,
        "every event written by its publish, none left to the subscribers' tasks"
    );
}
