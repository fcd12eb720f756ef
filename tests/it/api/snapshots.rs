//! The exact bytes of the stream for representative events: these snapshots are the
//! specification of the wire format. Cursors carry a wall-clock time (redacted) and
//! the node's origin (fixed here), so they are stable.

use std::time::Duration;

use sse_cluster::clock::Clock;

use crate::common::server::*;

/// A node with a fixed origin, and a stream to `path` read up to the opening cursor.
async fn node_and_stream(config: sse_cluster::Config, path: &str) -> (Server, RawStream) {
    let server = Server::start_with(config, 0x5eed, Clock::starting_at(1_700_000_000_000)).await;
    let stream = RawStream::get(server.addr, path, &[]).await;
    assert_eq!(stream.status, 200);
    (server, stream)
}

/// Reads blocks until one containing `last` and returns all of them.
async fn blocks_through(stream: &mut RawStream, last: &str) -> String {
    let mut text = String::new();
    loop {
        let block = stream.next_block().await.expect("block");
        text.push_str(&block);
        if block.contains(last) {
            return wire(&text);
        }
    }
}

#[tokio::test]
async fn wire_opening_of_a_stream() {
    let (_server, mut stream) = node_and_stream(config(), "/channel/news").await;
    insta::assert_snapshot!("opening", blocks_through(&mut stream, "id:").await);
}

#[tokio::test]
async fn wire_events_with_nested_json_unicode_and_retry() {
    let (server, mut stream) = node_and_stream(config(), "/channel/news").await;
    blocks_through(&mut stream, "id:").await;
    server
        .publish(
            "/channel/news",
            r#"{"event":"order","data":{"id":7,"lines":[{"sku":"A-1","qty":2,"price":9.90}],"gift":null,"tags":["a","b"],"note":"line1\nline2 \"quoted\""}}"#,
        )
        .await;
    insta::assert_snapshot!(
        "nested_json",
        blocks_through(&mut stream, "event: order").await
    );

    server
        .publish(
            "/channel/news",
            "{\"data\":\"h\u{e9}llo w\u{f6}rld \u{1f30d} \u{65e5}\u{672c} \u{2028} \\u2029\"}",
        )
        .await;
    insta::assert_snapshot!("unicode_data", blocks_through(&mut stream, "data:").await);

    server
        .publish(
            "/channel/news",
            r#"{"event":"slow-down","retry":10000,"data":"string data keeps its quotes"}"#,
        )
        .await;
    insta::assert_snapshot!(
        "event_with_retry",
        blocks_through(&mut stream, "retry: 10000").await
    );
}

#[tokio::test]
async fn wire_keep_alive_comment() {
    let mut config = config();
    config.http.keep_alive = Duration::from_millis(200);
    let (_server, mut stream) = node_and_stream(config, "/channel/idle").await;
    insta::assert_snapshot!(
        "keep_alive",
        blocks_through(&mut stream, "keep-alive").await
    );
}

#[tokio::test]
async fn wire_reset_event() {
    let (_server, mut stream) =
        node_and_stream(config(), "/channel/news?lastEventId=not-a-cursor").await;
    insta::assert_snapshot!("reset", blocks_through(&mut stream, "id:").await);
}

#[tokio::test]
async fn wire_targeted_event_and_replay() {
    let (server, mut alice) = node_and_stream(config(), "/channel/room/client/alice").await;
    blocks_through(&mut alice, "id:").await;
    let mut bob = RawStream::get(server.addr, "/channel/room/client/bob", &[]).await;
    let bob_opening = Frame::parse(&bob.next_block().await.expect("retry"));
    assert!(bob_opening.retry.is_some());
    let bob_cursor = Frame::parse(&bob.next_block().await.expect("cursor"))
        .id
        .expect("cursor");
    server
        .publish(
            "/channel/room/client/alice",
            r#"{"event":"dm","data":{"from":"bob","text":"hi"}}"#,
        )
        .await;
    server
        .publish("/channel/room", r#"{"data":"to everyone"}"#)
        .await;
    insta::assert_snapshot!("targeted", blocks_through(&mut alice, "to everyone").await);

    // Bob resumes from his opening cursor: the broadcast is replayed, the private
    // event is not, and the stream ends the preamble with the cursor now.
    drop(bob);
    let mut resumed = RawStream::get(
        server.addr,
        "/channel/room/client/bob2",
        &[("Last-Event-ID", &bob_cursor)],
    )
    .await;
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str(&resumed.next_block().await.expect("block"));
    }
    insta::assert_snapshot!("replay", wire(&text));
}
