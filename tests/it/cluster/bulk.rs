//! Bulk publishes in a cluster: every event of a bulk publish on one node reaches
//! the subscribers on the others exactly once and in order, as single publishes do.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::common::node::*;
use crate::common::sse::*;

/// A bulk publish of events `from..=to` (each `{"origin":0,"n":n}` with the id `e{n}`)
/// to `path` on `node`; returns the answer lines.
async fn bulk(node: &NodeProcess, path: &str, from: u64, to: u64) -> Vec<Value> {
    let body: String = (from..=to)
        .map(|n| format!("{{\"id\":\"e{n}\",\"data\":{{\"origin\":0,\"n\":{n}}}}}\n"))
        .collect();
    let response = client()
        .post(node.url(path))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("bulk publish");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_publish_on_one_node_reaches_subscribers_on_another_exactly_once() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    for node in [&a, &b] {
        wait_for_members(node, 2).await;
    }
    let mut on_b = subscribe(b.url("/channel/news"), None).await;
    let mut on_a = subscribe(a.url("/channel/news"), None).await;
    let mut other_on_b = subscribe(b.url("/channel/other"), None).await;

    // Three requests of 100 events on A, the second sent twice (a retry).
    assert_eq!(bulk(&a, "/channel/news", 1, 100).await.len(), 100);
    let first = bulk(&a, "/channel/news", 101, 200).await;
    let retry = bulk(&a, "/channel/news", 101, 200).await;
    assert!(first.iter().all(|r| r["duplicate"] == false));
    assert!(retry.iter().all(|r| r["duplicate"] == true));
    assert_eq!(bulk(&a, "/channel/news", 201, 300).await.len(), 100);
    // And one to every channel: both channels on B get it.
    let all = bulk(&a, "/channel", 301, 310).await;
    assert!(all.iter().all(|r| r["duplicate"] == false), "{all:?}");

    let expected = HashMap::from([(0, 310)]);
    for (node, rx) in [("B", &mut on_b), ("A", &mut on_a)] {
        let (events, named, _) = collect(rx, 310, Duration::from_secs(20)).await;
        assert!(named.is_empty(), "{node}: signals {named:?}");
        check_exactly_once(&events, &expected);
        let (extra, _, _) = collect(rx, 1, Duration::from_millis(500)).await;
        assert!(extra.is_empty(), "{node}: extra events {extra:?}");
    }
    let (events, _, _) = collect(&mut other_on_b, 10, Duration::from_secs(20)).await;
    let ns: Vec<u64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, (301..=310).collect::<Vec<_>>());

    // The ids travelled with the events: a retry of a batch on B is a duplicate there.
    let on_b_retry = bulk(&b, "/channel/news", 1, 100).await;
    assert!(
        on_b_retry.iter().all(|r| r["duplicate"] == true),
        "{on_b_retry:?}"
    );
}
