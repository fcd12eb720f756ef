//! Channel patterns (`GET /channel/orders.*`): the events of every matching channel,
//! wrapped with their channel, one `Last-Event-ID` resuming them exactly, no channel
//! made for the pattern, and a clear 400 for a `*` anywhere else.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::server::*;

/// (channel, data) of a wrapped event.
fn unwrap(frame: &Frame) -> (String, Value) {
    let json = frame.json();
    let channel = json["channel"].as_str().expect("channel name").to_owned();
    (channel, json["data"].clone())
}

/// Wrapped events until the one whose data is `"live"`, and its id.
async fn until_live(stream: &mut RawStream) -> (Vec<(String, Value)>, Vec<Frame>, String) {
    let (mut events, mut named) = (Vec::new(), Vec::new());
    loop {
        let frame = stream.next_event().await.expect("stream ended early");
        if frame.event.is_some() {
            named.push(frame);
            continue;
        }
        let (channel, data) = unwrap(&frame);
        if data == "live" {
            return (events, named, frame.id.expect("id"));
        }
        events.push((channel, data));
    }
}

async fn publish(server: &Server, channel: &str, data: &str) {
    let answer = server
        .publish(
            &format!("/channel/{channel}"),
            &format!(r#"{{"data":{data}}}"#),
        )
        .await;
    assert!(answer["id"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_pattern_stream_gets_every_matching_channel_wrapped_and_makes_no_channel() {
    let server = Server::start(config()).await;
    let mut stream = open_stream(server.addr, "/channel/news,orders.*/client/ann", &[]).await;
    let opening = Frame::parse(&stream.next_block().await.expect("cursor"));
    assert!(opening.id.expect("opening cursor").starts_with('m'));
    let status = server.get_json("/status").await;
    assert_eq!(status["channels"]["orders.*"], serde_json::json!(["ann"]));
    assert_eq!(status["channels"]["news"], serde_json::json!(["ann"]));
    assert_eq!(
        server.metric("sse_channels").await,
        1,
        "the pattern is none"
    );
    for (channel, n) in [
        ("orders.1", 1),
        ("ordersx", 2),
        ("orders.eu:2", 3),
        ("news", 4),
        ("other.orders.3", 5),
        ("orders.1", 6),
    ] {
        publish(&server, channel, &n.to_string()).await;
    }
    publish(&server, "orders.9", r#""live""#).await;
    let (events, named, _) = until_live(&mut stream).await;
    assert!(named.is_empty(), "{named:?}");
    let want: Vec<(String, Value)> = [
        ("orders.1", 1),
        ("orders.eu:2", 3),
        ("news", 4),
        ("orders.1", 6),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_owned(), n.into()))
    .collect();
    assert_eq!(events, want);
    // Published channels are the only ones, and with the stream gone, nothing is
    // listed under the pattern.
    drop(stream);
    server.wait_no_channels().await;
    // A targeted publish finds a client that follows the channel through a pattern.
    let mut zoe = open_stream(server.addr, "/channel/dm:*/client/zoe", &[]).await;
    zoe.next_block().await.expect("cursor");
    let answer = server
        .publish("/channel/dm:zoe/client/zoe", r#"{"data":"hi"}"#)
        .await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let frame = zoe.next_event().await.expect("targeted event");
    assert_eq!(
        frame.data.as_deref(),
        Some(r#"{"channel":"dm:zoe","data":"hi"}"#)
    );
}

#[tokio::test]
async fn a_pattern_stream_resumes_exactly_with_channels_first_seen_while_away() {
    let server = Server::start(config()).await;
    let path = "/channel/o.*,n";
    let mut stream = open_stream(server.addr, path, &[]).await;
    stream.next_block().await.expect("cursor");
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut n = 0;
    let mut publish_to =
        async |server: &Server, channels: &[&str], expected: &mut BTreeMap<String, Vec<u64>>| {
            for channel in channels {
                n += 1;
                publish(server, channel, &n.to_string()).await;
                expected.entry(channel.to_string()).or_default().push(n);
            }
        };
    publish_to(&server, &["o.a", "n", "o.b", "o.a", "n"], &mut expected).await;
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_id = String::new();
    for _ in 0..3 {
        let frame = stream.next_event().await.expect("event");
        let (channel, data) = unwrap(&frame);
        got.entry(channel).or_default().push(data.as_u64().unwrap());
        last_id = frame.id.expect("id");
    }
    drop(stream);
    // While away: the known channels, and ones the stream never saw.
    publish_to(&server, &["o.c", "o.a", "n", "o.d:x", "p"], &mut expected).await;
    expected.remove("p");
    for round in 0..2 {
        let mut resumed = open_stream(server.addr, path, &[("Last-Event-ID", &last_id)]).await;
        publish(&server, "n", r#""live""#).await;
        let (events, named, id) = until_live(&mut resumed).await;
        assert!(named.is_empty(), "round {round}: {named:?}");
        if round == 1 {
            assert!(events.is_empty(), "{events:?}");
        }
        for (channel, data) in events {
            got.entry(channel).or_default().push(data.as_u64().unwrap());
        }
        last_id = id;
    }
    // The sentinels aside, each channel's events once and in order.
    assert_eq!(got, expected);
    assert_eq!(server.metric("sse_resets_total").await, 0);

    // An id of another set resets the pattern like a channel.
    let other = format!("/channel/o.*?lastEventId={last_id}");
    let mut stream = open_stream(server.addr, &other, &[]).await;
    let reset = Frame::parse(&stream.next_block().await.expect("reset"));
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["channel"], "o.*");
}

#[tokio::test]
async fn bad_patterns_are_400_saying_what_is_wrong() {
    let server = Server::start(config()).await;
    let cases = [
        ("/channel/*", "not a channel pattern"),
        ("/channel/orders*", "not a channel pattern"),
        ("/channel/orders.*.x", "not a channel pattern"),
        ("/channel/or*ders", "not a channel pattern"),
        ("/channel/orders.**", "not a channel pattern"),
        ("/channel/a,*.x", "not a channel pattern"),
        ("/channel/orders.*,orders.*", "appears twice"),
        (
            "/channel/orders.*,orders.x",
            "\"orders.x\" is already covered by the pattern \"orders.*\"",
        ),
        (
            "/channel/orders.eu.*,orders.*",
            "\"orders.eu.*\" is already covered",
        ),
        ("/channel/orders%20x.*", "may only contain"),
        ("/channel/orders.*,", "empty channel name"),
        ("/channel/o.*/client/x*", "client name"),
    ];
    for (path, says) in cases {
        server.assert_refused(path, 400, says).await;
    }
    // Publishing to a pattern is not a thing.
    let (status, _) = server.post("/channel/orders.*", r#"{"data":1}"#).await;
    assert_eq!(status, 400);
    // Patterns that do not overlap are fine together.
    let mut stream = open_stream(server.addr, "/channel/orders.*,order:*,orders", &[]).await;
    stream.next_block().await.expect("cursor");
}
