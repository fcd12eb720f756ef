//! Resuming with `Last-Event-ID`: exactly the missed events, in order, none twice;
//! a reset when the broker cannot prove completeness; idempotent publishes.

use crate::common::server::*;

/// Publishes `n` numbered events and returns their cursors.
async fn publish_numbered(
    server: &Server,
    channel: &str,
    range: std::ops::Range<u32>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in range {
        let answer = server
            .publish(
                &format!("/channel/{channel}"),
                &format!(r#"{{"event":"n","data":{n}}}"#),
            )
            .await;
        ids.push(answer["id"].as_str().expect("cursor").to_owned());
    }
    ids
}

/// Reads the resumed stream up to a live sentinel and returns the numbers seen.
async fn numbers_until_live(server: &Server, stream: &mut RawStream, channel: &str) -> Vec<u64> {
    server
        .publish(&format!("/channel/{channel}"), r#"{"data":"live"}"#)
        .await;
    events_until(stream, r#""live""#)
        .await
        .iter()
        .map(|f| f.json().as_u64().expect("number"))
        .collect()
}

#[tokio::test]
async fn last_event_id_header_replays_exactly_the_missed_events() {
    let server = Server::start(config()).await;
    let mut first = open_stream(server.addr, "/channel/resume", &[]).await;
    let ids = publish_numbered(&server, "resume", 0..10).await;
    // The subscriber reads four events, then its connection drops.
    let mut last_id = String::new();
    for n in 0..4u64 {
        let frame = first.next_event().await.expect("event");
        assert_eq!(frame.json(), n);
        last_id = frame.id.expect("id");
    }
    assert_eq!(last_id, ids[3]);
    drop(first);
    publish_numbered(&server, "resume", 10..15).await;

    let mut resumed = open_stream(
        server.addr,
        "/channel/resume",
        &[("Last-Event-ID", &last_id)],
    )
    .await;
    let seen = numbers_until_live(&server, &mut resumed, "resume").await;
    assert_eq!(seen, (4..15).collect::<Vec<_>>());
    assert_eq!(server.metric("sse_resets_total").await, 0);
}

#[tokio::test]
async fn last_event_id_query_replays_exactly_the_missed_events() {
    let server = Server::start(config()).await;
    let mut first = open_stream(server.addr, "/channel/query", &[]).await;
    let opening = Frame::parse(&first.next_block().await.expect("cursor"));
    let opening_id = opening.id.expect("opening cursor");
    publish_numbered(&server, "query", 0..6).await;
    drop(first);

    // From the opening cursor: everything published since.
    let path = format!("/channel/query?lastEventId={opening_id}");
    let mut resumed = open_stream(server.addr, &path, &[]).await;
    assert_eq!(
        numbers_until_live(&server, &mut resumed, "query").await,
        (0..6).collect::<Vec<_>>()
    );

    // The header wins over the query (a browser's own reconnect sends the header).
    let ids = publish_numbered(&server, "query", 6..9).await;
    let mut both = open_stream(server.addr, &path, &[("Last-Event-ID", &ids[1])]).await;
    assert_eq!(
        numbers_until_live(&server, &mut both, "query").await,
        vec![8]
    );
}

#[tokio::test]
async fn resuming_from_the_latest_cursor_replays_nothing_twice() {
    let server = Server::start(config()).await;
    let mut stream = open_stream(server.addr, "/channel/again", &[]).await;
    publish_numbered(&server, "again", 0..3).await;
    let mut last = String::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let frame = stream.next_event().await.expect("event");
        seen.push(frame.json().as_u64().expect("number"));
        last = frame.id.expect("id");
    }
    // Reconnect several times in a row; every reconnect starts where the last stopped.
    for round in 0..3u32 {
        drop(stream);
        let base = 3 + round * 2;
        publish_numbered(&server, "again", base..base + 2).await;
        stream = open_stream(server.addr, "/channel/again", &[("Last-Event-ID", &last)]).await;
        for _ in 0..2 {
            let frame = stream.next_event().await.expect("event");
            seen.push(frame.json().as_u64().expect("number"));
            assert!(frame.id.is_some());
        }
        // The block after the replay is the cursor now: resuming from it adds nothing.
        let cursor = Frame::parse(&stream.next_block().await.expect("cursor"));
        assert!(cursor.data.is_none(), "{cursor:?}");
        last = cursor.id.expect("id");
    }
    assert_eq!(seen, (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn unknown_last_event_id_gets_a_reset_then_live_events() {
    let server = Server::start(config()).await;
    publish_numbered(&server, "lost", 0..3).await;
    // Ids this broker could not have issued: a reset, then only live events.
    for bad in ["garbage", "1~", "1~zz.3", "%E2%80%A8", "-5"] {
        let path = format!("/channel/lost?lastEventId={bad}");
        let mut stream = open_stream(server.addr, &path, &[]).await;
        let reset = Frame::parse(&stream.next_block().await.expect("reset"));
        assert_eq!(reset.event.as_deref(), Some("reset"), "{bad}: {reset:?}");
        assert!(reset.id.is_none(), "a reset leaves lastEventId alone");
        assert!(reset.json()["reason"].is_string());
        let cursor = Frame::parse(&stream.next_block().await.expect("cursor"));
        assert!(
            cursor.id.is_some() && cursor.data.is_none(),
            "{bad}: {cursor:?}"
        );
        server.publish("/channel/lost", r#"{"data":"live"}"#).await;
        let next = stream.next_event().await.expect("live event");
        assert_eq!(next.data.as_deref(), Some(r#""live""#), "{bad}");
    }
    let mut header = open_stream(server.addr, "/channel/lost", &[("Last-Event-ID", "nope")]).await;
    let reset = Frame::parse(&header.next_block().await.expect("reset"));
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(server.metric("sse_resets_total").await, 6);
}

#[tokio::test]
async fn stale_last_event_id_gets_a_reset_then_what_history_remains() {
    let server = Server::start(config()).await;
    publish_numbered(&server, "stale", 0..3).await;
    // Well-formed cursors from before this node started (or from an unknown origin):
    // the broker cannot prove completeness, says so, then gives what it still has.
    for stale in ["12345", "1~abc.5"] {
        let mut stream =
            open_stream(server.addr, "/channel/stale", &[("Last-Event-ID", stale)]).await;
        let reset = Frame::parse(&stream.next_block().await.expect("reset"));
        assert_eq!(reset.event.as_deref(), Some("reset"), "{stale}: {reset:?}");
        let mut replayed = Vec::new();
        loop {
            let frame = Frame::parse(&stream.next_block().await.expect("block"));
            match frame.data {
                Some(_) => replayed.push(frame.json().as_u64().expect("number")),
                None => break,
            }
        }
        assert_eq!(replayed, [0, 1, 2], "{stale}");
    }
}

#[tokio::test]
async fn republished_id_is_delivered_once_and_answers_duplicate() {
    let server = Server::start(config()).await;
    let mut stream = open_stream(server.addr, "/channel/idem", &[]).await;
    let body = r#"{"id":"order-17","event":"order","data":{"n":17}}"#;
    let first = server.publish("/channel/idem", body).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["delivered"], 1);
    for _ in 0..3 {
        let again = server.publish("/channel/idem", body).await;
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["delivered"], 0);
        assert_eq!(again["id"], first["id"], "the original cursor");
    }
    // The same id on another channel is another event.
    let elsewhere = server.publish("/channel/idem-2", body).await;
    assert_eq!(elsewhere["duplicate"], false);
    // Publish-to-all honours it too, per channel.
    let all = server.publish("/channel", body).await;
    assert_eq!(all["duplicate"], true, "{all}");

    server.publish("/channel/idem", r#"{"data":"end"}"#).await;
    let got = events_until(&mut stream, r#""end""#).await;
    assert_eq!(datas(&got), vec![r#"{"n":17}"#.to_owned()]);
    assert_eq!(
        got[0].id.as_ref(),
        first["id"].as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(server.metric("sse_events_duplicate_total").await, 4);
}

/// A `Last-Event-ID` this cluster could not have issued (the attack: every field at
/// its maximum) gets `reset`, and the stream then carries every later event.
#[tokio::test]
async fn a_forged_last_event_id_gets_reset_and_every_later_event() {
    let server = Server::start(config()).await;
    let first = server.publish("/channel/f", r#"{"data":0}"#).await;
    let cursor = first["id"].as_str().expect("cursor");
    let origin = cursor
        .split('~')
        .nth(1)
        .and_then(|part| part.split_once('.'))
        .map(|(origin, _)| origin)
        .expect("origin in the cursor");
    let max = u64::MAX;
    let forged = format!("{max}~{origin}.{max}");
    let mut stream = open_stream(server.addr, "/channel/f", &[("last-event-id", &forged)]).await;
    let opening = stream.next_event().await.expect("reset");
    assert_eq!(opening.event.as_deref(), Some("reset"));
    server.publish("/channel/f", r#"{"data":"after"}"#).await;
    let before = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        events_until(&mut stream, r#""after""#),
    )
    .await
    .expect("the event after a forged id arrives");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(server.metric("sse_cursors_refused_total").await, 1);
}
