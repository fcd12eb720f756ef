//! Node limits over real sockets: channels per node (`--channels.max`) and replay
//! history bytes per node (`--replay.maxBytes`).

use crate::common::*;

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
    let server = Server::start(sse_cluster::Config {
        channels_max: 3,
        ..config()
    })
    .await;
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
    let server = Server::start(sse_cluster::Config {
        replay_max_bytes: max_bytes,
        max_body_bytes: 1024,
        ..config()
    })
    .await;
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
