//! A pattern stream across nodes: events published on one node reach a pattern
//! subscriber on another exactly once, and its cursor resumes on either node.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::node::*;
use crate::common::sse::*;

/// One wrapped event: channel, n, id.
type Got = (String, u64, String);

/// Wrapped events until two sentinels with data `token` (one per node) have come;
/// returns the events (earlier sentinels among them left out), the named ones,
/// and the last sentinel's id.
async fn until_live(rx: &mut Events, token: &str) -> (Vec<Got>, Vec<Event>, String) {
    let mut sentinels = 2;
    let (mut events, mut named) = (Vec::new(), Vec::new());
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the sentinels in time")
            .flatten()
            .expect("stream ended early");
        if event.event != "message" {
            named.push(event);
            continue;
        }
        let json: Value = serde_json::from_str(&event.data).expect("JSON data");
        let channel = json["channel"].as_str().expect("channel").to_owned();
        let id = event.id;
        if json["data"] == token {
            sentinels -= 1;
            if sentinels == 0 {
                return (events, named, id);
            }
            continue;
        }
        if json["data"].is_string() {
            continue;
        }
        events.push((channel, json["data"]["n"].as_u64().expect("n"), id));
    }
}

/// A sentinel on each node: once both arrived, so has everything published before
/// them (each node's events reach a stream in the order it accepted them).
async fn sentinels(nodes: [&NodeProcess; 2], token: &str) {
    for node in nodes {
        publish(node, "orders.live", json!(token)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscriber_gets_another_nodes_events_once_and_resumes_anywhere() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    for node in [&a, &b] {
        wait_for_members(node, 2).await;
    }
    let path = "/channel/orders.*";
    let channels = ["orders.1", "orders.eu:2", "orders.3", "other.4"];
    // n is published on `b` when `on_b(n)`, else on `a`.
    let on_b = |n: u64| if n < 12 { n % 4 == 3 } else { n % 2 == 1 };
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut publish_range = async |range: std::ops::Range<u64>| {
        for n in range {
            let node = if on_b(n) { &b } else { &a };
            let channel = channels[n as usize % channels.len()];
            publish(node, channel, json!({"n": n})).await;
            if channel.starts_with("orders.") {
                expected.entry(channel.into()).or_default().push(n);
            }
        }
    };
    let mut stream = subscribe(b.url(path), None).await;
    publish_range(0..12).await;
    sentinels([&a, &b], "first").await;
    let (events, named, _) = until_live(&mut stream, "first").await;
    assert!(named.is_empty(), "{named:?}");
    assert_eq!(events.len(), 9, "{events:?}");
    drop(stream);
    // The client had read five events when its connection dropped.
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (channel, n, _) in &events[..5] {
        got.entry(channel.clone()).or_default().push(*n);
    }
    let mut last_id = events[4].2.clone();
    publish_range(12..20).await;
    // On the other node, then back on `b`: the second resume gets nothing more.
    for (round, node) in [&a, &b].into_iter().enumerate() {
        let mut resumed = subscribe(node.url(path), Some(last_id.clone())).await;
        let token = format!("round {round}");
        sentinels([&a, &b], &token).await;
        let (events, named, id) = until_live(&mut resumed, &token).await;
        assert!(named.is_empty(), "round {round}: {named:?}");
        if round == 1 {
            assert!(events.is_empty(), "{events:?}");
        }
        for (channel, n, _) in events {
            got.entry(channel).or_default().push(n);
        }
        last_id = id;
    }
    for (channel, numbers) in &mut got {
        for node in [false, true] {
            let mine: Vec<u64> = numbers
                .iter()
                .copied()
                .filter(|n| on_b(*n) == node)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{channel}: {mine:?}");
        }
        numbers.sort_unstable();
    }
    assert_eq!(got, expected);
}
