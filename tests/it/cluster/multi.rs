//! A stream of several channels resumed on another node: every channel's missed
//! events exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::node::*;
use crate::common::sse::*;

const CHANNELS: [&str; 3] = ["ma", "mb", "mc"];

/// Publishes `range` to every channel, alternating between the nodes.
async fn publish_range(nodes: [&NodeProcess; 2], range: std::ops::Range<u64>) {
    for n in range {
        for (i, channel) in CHANNELS.iter().enumerate() {
            let node = nodes[(n as usize + i) % 2];
            publish(node, channel, json!({"n": n})).await;
        }
    }
}

/// Adds wrapped events to `got` (channel → numbers, in order).
fn record(got: &mut BTreeMap<String, Vec<u64>>, events: &[Event]) {
    for event in events {
        let json: Value = serde_json::from_str(&event.data).expect("JSON data");
        let channel = json["channel"].as_str().expect("channel").to_owned();
        let n = json["data"]["n"].as_u64().expect("n");
        got.entry(channel).or_default().push(n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_several_channels_resumes_exactly_on_another_node() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    for node in [&a, &b] {
        wait_for_members(node, 2).await;
    }
    let path = format!("/channel/{}", CHANNELS.join(","));
    let mut on_a = subscribe(a.url(&path), None).await;
    publish_range([&a, &b], 0..10).await;
    // Read part of it on `a`, then lose the connection.
    let (first, named, _) = collect(&mut on_a, 13, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 13, "{named:?}");
    assert!(named.is_empty(), "{named:?}");
    let last_id = first.last().map(|e| e.id.clone()).expect("an id");
    assert!(last_id.starts_with('m'), "{last_id}");
    drop(on_a);
    publish_range([&a, &b], 10..15).await;

    let mut on_b = subscribe(b.url(&path), Some(last_id)).await;
    let (rest, named, _) = collect(&mut on_b, 45 - 13, Duration::from_secs(20)).await;
    assert!(named.is_empty(), "resets or gaps: {named:?}");
    let (extra, _, _) = collect(&mut on_b, 1, Duration::from_millis(700)).await;
    assert!(extra.is_empty(), "more than the missed events: {extra:?}");
    let mut got = BTreeMap::new();
    record(&mut got, &first);
    record(&mut got, &rest);
    for channel in CHANNELS {
        let mut numbers = got.remove(channel).unwrap_or_default();
        // Each node's events in the order it accepted them.
        for node in 0..2 {
            let index = CHANNELS.iter().position(|c| *c == channel).unwrap();
            let mine: Vec<u64> = numbers
                .iter()
                .copied()
                .filter(|n| (*n as usize + index) % 2 == node)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{channel}: {mine:?}");
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (0..15).collect::<Vec<_>>(), "{channel}");
    }
}
