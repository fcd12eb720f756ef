//! One stream of several channels (`GET /channel/a,b,c`): every event wrapped with
//! its channel's name, one `Last-Event-ID` resuming every channel exactly, a `reset`
//! of its own for a channel whose history is gone, and the stream counted as a
//! subscriber of each channel.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::server::*;

/// The channel and the published data of a wrapped event.
fn unwrap(frame: &Frame) -> (String, Value) {
    let json = frame.json();
    let channel = json["channel"].as_str().expect("channel name").to_owned();
    assert_eq!(json.as_object().map(|o| o.len()), Some(2), "{json}");
    (channel, json["data"].clone())
}

/// What a stream delivered up to a sentinel: numbers per channel, in order; named
/// events; the id of the sentinel.
struct Read {
    numbers: BTreeMap<String, Vec<u64>>,
    named: Vec<Frame>,
    last_id: String,
}

/// Reads events until the live sentinel `{"channel":<sentinel_channel>,"data":"live"}`.
async fn read_until_live(stream: &mut RawStream, sentinel_channel: &str) -> Read {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut named = Vec::new();
    loop {
        let frame = stream.next_event().await.expect("stream ended early");
        assert!(frame.id.is_some() || frame.event.is_some(), "{frame:?}");
        if frame.event.is_some() {
            named.push(frame);
            continue;
        }
        let (channel, data) = unwrap(&frame);
        if channel == sentinel_channel && data == "live" {
            return Read {
                numbers: seen,
                named,
                last_id: frame.id.expect("id"),
            };
        }
        let n = data.as_u64().or_else(|| data["n"].as_u64());
        seen.entry(channel).or_default().push(n.expect("a number"));
    }
}

async fn publish_n(server: &Server, channel: &str, n: u64) {
    server
        .publish(
            &format!("/channel/{channel}"),
            &format!(r#"{{"data":{n}}}"#),
        )
        .await;
}

#[tokio::test]
async fn three_channels_on_one_stream_arrive_wrapped_with_their_names_in_order() {
    let server = Server::start(config()).await;
    let mut stream = open_stream(server.addr, "/channel/news,sport,weather", &[]).await;
    let opening = Frame::parse(&stream.next_block().await.expect("cursor"));
    assert!(opening.data.is_none(), "{opening:?}");
    assert!(opening.id.expect("opening cursor").starts_with('m'));
    for n in 0..5u64 {
        for channel in ["news", "sport", "weather"] {
            publish_n(&server, channel, n).await;
        }
    }
    server
        .publish(
            "/channel/sport",
            r#"{"event":"goal","data":{"team":"x"},"retry":500}"#,
        )
        .await;
    server
        .publish("/channel/weather", r#"{"data":"live"}"#)
        .await;
    let Read {
        numbers: seen,
        named,
        ..
    } = read_until_live(&mut stream, "weather").await;
    for channel in ["news", "sport", "weather"] {
        assert_eq!(seen[channel], (0..5).collect::<Vec<_>>(), "{channel}");
    }
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].event.as_deref(), Some("goal"));
    assert_eq!(named[0].retry.as_deref(), Some("500"));
    assert_eq!(
        named[0].data.as_deref(),
        Some(r#"{"channel":"sport","data":{"team":"x"}}"#)
    );
    // A single-channel stream of the same node is as it always was.
    let mut single = open_stream(server.addr, "/channel/news", &[]).await;
    publish_n(&server, "news", 9).await;
    let frame = single.next_event().await.expect("event");
    assert_eq!(frame.data.as_deref(), Some("9"));
    assert!(frame.id.is_some_and(|id| !id.starts_with('m')));
}

/// Publishes `range` to each of `channels` in turn, and one event to every channel.
async fn publish_round(server: &Server, channels: &[&str], range: std::ops::Range<u64>) {
    for n in range.clone() {
        for channel in channels {
            publish_n(server, channel, n).await;
        }
        if n == range.start {
            server
                .publish("/channel", &format!(r#"{{"data":{}}}"#, 1000 + n))
                .await;
        }
    }
}

#[tokio::test]
async fn one_last_event_id_resumes_every_channel_exactly() {
    let server = Server::start(config()).await;
    let channels = ["a", "b", "c"];
    let path = "/channel/c,a,b";
    let mut stream = open_stream(server.addr, path, &[]).await;
    stream.next_block().await.expect("cursor");
    // Another stream keeps the channels live while the first is away (a publish to
    // every channel passes channels without subscribers by; see resume.rs).
    let mut watcher = open_stream(server.addr, "/channel/a,b,c", &[]).await;
    watcher.next_block().await.expect("cursor");
    // Each channel's expected numbers; a publish to every channel is in each.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut record = |range: std::ops::Range<u64>| {
        for channel in channels {
            let list = expected.entry(channel.to_owned()).or_default();
            list.push(range.start);
            list.push(1000 + range.start);
            list.extend(range.start + 1..range.end);
        }
    };
    publish_round(&server, &channels, 0..6).await;
    record(0..6);
    // Read some of them (the cut falls inside the interleaving of the channels),
    // then the connection drops; more are published meanwhile.
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_id = String::new();
    for _ in 0..8 {
        let frame = stream.next_event().await.expect("event");
        let (channel, data) = unwrap(&frame);
        got.entry(channel)
            .or_default()
            .push(data.as_u64().expect("number"));
        last_id = frame.id.expect("id");
    }
    drop(stream);
    publish_round(&server, &channels, 6..9).await;
    record(6..9);
    // Twice: the second resume, from the id of the first one's last event, replays
    // nothing.
    for round in 0..2 {
        let mut resumed =
            open_stream(server.addr, path, &[("Last-Event-ID", last_id.as_str())]).await;
        server.publish("/channel/b", r#"{"data":"live"}"#).await;
        let read = read_until_live(&mut resumed, "b").await;
        assert!(
            read.named.is_empty(),
            "round {round}, id {last_id}: {:?}",
            read.named
        );
        if round == 1 {
            assert!(read.numbers.is_empty(), "{:?}", read.numbers);
        }
        for (channel, numbers) in read.numbers {
            got.entry(channel).or_default().extend(numbers);
        }
        last_id = read.last_id;
    }
    assert_eq!(got, expected);
    assert_eq!(server.metric("sse_resets_total").await, 0);
}

#[tokio::test]
async fn a_channel_whose_history_is_gone_gets_its_own_reset_and_the_others_replay() {
    let mut config = config();
    config.broker.replay_events = 3;
    config.broker.subscriber_buffer = 3;
    let server = Server::start(config).await;
    let mut stream = open_stream(server.addr, "/channel/gone,kept", &[]).await;
    let opening = Frame::parse(&stream.next_block().await.expect("cursor"));
    let cursor = opening.id.expect("opening cursor");
    drop(stream);
    for n in 0..5 {
        publish_n(&server, "gone", n).await;
    }
    for n in 0..2 {
        publish_n(&server, "kept", n).await;
    }
    let path = format!("/channel/kept,gone?lastEventId={cursor}");
    let mut resumed = open_stream(server.addr, &path, &[]).await;
    server.publish("/channel/kept", r#"{"data":"live"}"#).await;
    let Read {
        numbers: seen,
        named,
        ..
    } = read_until_live(&mut resumed, "kept").await;
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].event.as_deref(), Some("reset"));
    assert!(named[0].id.is_none(), "a reset leaves lastEventId alone");
    let reset = named[0].json();
    assert_eq!(reset["channel"], "gone", "{reset}");
    assert!(reset["data"]["reason"].is_string(), "{reset}");
    // After its reset, what the history of `gone` still holds; `kept` exactly.
    assert_eq!(seen["gone"], vec![2, 3, 4]);
    assert_eq!(seen["kept"], vec![0, 1]);
    assert_eq!(server.metric("sse_resets_total").await, 1);

    // An id of another set of channels (or a single channel's) resets every channel.
    for other in [cursor.as_str(), "1~5eed0001.1"] {
        let path = format!("/channel/kept,gone,third?lastEventId={other}");
        let mut stream = open_stream(server.addr, &path, &[]).await;
        let mut resets = Vec::new();
        loop {
            let frame = Frame::parse(&stream.next_block().await.expect("block"));
            if frame.event.as_deref() == Some("reset") {
                resets.push(frame.json()["channel"].as_str().expect("name").to_owned());
            } else if frame.data.is_none() {
                break;
            }
        }
        assert_eq!(resets, ["gone", "kept", "third"], "{other}");
    }
}

#[tokio::test]
async fn bad_channel_lists_are_400_saying_what_is_wrong() {
    let mut config = config();
    config.http.max_channels_per_stream = 3;
    let server = Server::start(config).await;
    let cases = [
        ("/channel/", "no channel"),
        ("/channel/a,", "empty channel name"),
        ("/channel/,a", "empty channel name"),
        ("/channel/a,,b", "empty channel name"),
        ("/channel/,", "empty channel name"),
        ("/channel/a,b,a", "\"a\" appears twice"),
        ("/channel/a,b,c,d", "at most 3 channels"),
        ("/channel/a,b%20c", "channel name may only contain"),
        ("/channel/a,b,c,d/client/x", "at most 3 channels"),
        ("/channel/a,a/client/x", "appears twice"),
        ("/channel/a,b/client/x%2Cy", "client name"),
    ];
    for (path, says) in cases {
        server.assert_refused(path, 400, says).await;
    }
    // Up to the limit is fine.
    let mut stream = open_stream(server.addr, "/channel/a,b,c", &[]).await;
    stream.next_block().await.expect("cursor");
}

#[tokio::test]
async fn the_stream_is_a_subscriber_of_each_channel_and_targeting_reaches_it() {
    let server = Server::start(config()).await;
    let mut zoe = open_stream(server.addr, "/channel/t1,t2,t3/client/zoe", &[]).await;
    zoe.next_block().await.expect("cursor");
    let mut anonymous = open_stream(server.addr, "/channel/t1,t2", &[]).await;
    anonymous.next_block().await.expect("cursor");
    let status = server.get_json("/status").await;
    let channels = &status["channels"];
    for channel in ["t1", "t2", "t3"] {
        let clients = channels[channel].as_array().expect("listed");
        assert!(clients.contains(&"zoe".into()), "{status}");
    }
    // The assigned id is the same on each channel of a stream.
    let assigned: Vec<&Value> = channels["t3"].as_array().unwrap().iter().collect();
    assert_eq!(assigned.len(), 1);
    let other = channels["t1"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| *c != "zoe")
        .expect("the anonymous stream")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(channels["t2"]
        .as_array()
        .unwrap()
        .contains(&other.as_str().into()));
    assert_eq!(server.metric("sse_channels").await, 3);

    let answer = server
        .publish("/channel/t2/client/zoe", r#"{"event":"dm","data":"hi"}"#)
        .await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let frame = zoe.next_event().await.expect("targeted event");
    assert_eq!(frame.event.as_deref(), Some("dm"));
    assert_eq!(
        frame.data.as_deref(),
        Some(r#"{"channel":"t2","data":"hi"}"#)
    );
    let path = format!("/channel/t1/client/{other}");
    let answer = server.publish(&path, r#"{"data":"yours"}"#).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let frame = anonymous.next_event().await.expect("targeted event");
    assert_eq!(
        frame.data.as_deref(),
        Some(r#"{"channel":"t1","data":"yours"}"#)
    );

    // A client id taken on one channel of the list: 409 naming it, and nothing kept.
    let response = server
        .http
        .get(server.url("/channel/t4,t3/client/zoe"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("\"t3\""), "{body}");

    // Closing the streams ends their channels.
    drop((zoe, anonymous));
    server.wait_no_channels().await;
    assert_eq!(server.metric("sse_subscribers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falling_behind_on_one_channel_ends_the_stream_with_its_overflow() {
    let _heavy = HEAVY.lock().await;
    let events = 300;
    let mut config = config();
    config.broker.replay_events = events;
    config.broker.subscriber_buffer = 32;
    let server = Server::start(config).await;
    let mut slow = RawStream::get_small_buffer(server.addr, "/channel/s1,s2").await;
    assert_eq!(slow.status, 200);
    let padding = "p".repeat(8 * 1024);
    for n in 0..events {
        let body = format!(r#"{{"data":{{"n":{n},"pad":"{padding}"}}}}"#);
        server.publish("/channel/s1", &body).await;
    }
    let mut seen = Vec::new();
    let mut last_id = None;
    let overflow = loop {
        let frame = Frame::parse(&slow.next_block().await.expect("ends after overflow"));
        if frame.event.as_deref() == Some("overflow") {
            break frame;
        }
        if frame.data.is_some() {
            let (channel, data) = unwrap(&frame);
            assert_eq!(channel, "s1");
            seen.push(data["n"].as_u64().expect("n"));
        }
        last_id = frame.id.or(last_id);
    };
    let json = overflow.json();
    assert_eq!(json["channel"], "s1", "{json}");
    assert!(
        json["data"]["behind"].as_u64().expect("behind") > 32,
        "{json}"
    );
    assert_eq!(slow.next_block().await, None, "disconnected after overflow");
    assert!(seen.len() < events);
    assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        server.metric("sse_slow_subscriber_disconnects_total").await,
        1
    );
    // The last id it had resumes the rest, exactly.
    let last_id = last_id.expect("an id");
    let mut resumed = open_stream(
        server.addr,
        "/channel/s2,s1",
        &[("Last-Event-ID", &last_id)],
    )
    .await;
    server.publish("/channel/s2", r#"{"data":"live"}"#).await;
    let read = read_until_live(&mut resumed, "s2").await;
    assert!(read.named.is_empty(), "{:?}", read.named);
    let rest = read.numbers.get("s1").cloned().unwrap_or_default();
    assert_eq!(rest, (seen.len() as u64..events as u64).collect::<Vec<_>>());
}

/// Each channel of a stream has its own keep-alive clock; the stream still sends
/// about one comment per interval, not one per channel. Counted over ten intervals,
/// so a slow machine can only lower the count: one comment per channel would be
/// about thirty. (A node-wide sweep that marks the channels one after the other can
/// now and then make a second comment follow the first; the bound allows that.)
#[tokio::test]
async fn an_idle_stream_of_several_channels_gets_one_keep_alive_per_interval() {
    let interval = std::time::Duration::from_millis(300);
    let mut config = config();
    config.http.keep_alive = interval;
    let server = Server::start(config).await;
    let mut stream = open_stream(server.addr, "/channel/k1,k2,k3", &[]).await;
    stream.next_block().await.expect("cursor");
    let window = interval * 10;
    let end = tokio::time::Instant::now() + window;
    let mut comments = 0;
    while let Ok(block) = tokio::time::timeout_at(end, stream.next_block()).await {
        let frame = Frame::parse(&block.expect("keep-alive"));
        assert_eq!(frame.comments, ["keep-alive"], "{frame:?}");
        comments += 1;
    }
    assert!(
        (3..=22).contains(&comments),
        "{comments} keep-alive comments in {window:?} on a stream of three channels"
    );
}
