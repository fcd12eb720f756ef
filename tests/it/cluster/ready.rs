//! Readiness of a node with seeds: it waits for a peer, but not forever (a single
//! replica seeded by its own headless service has none).

use std::time::Duration;

use crate::common::node::*;
use crate::common::sse::*;

/// `/readyz`'s status, or `None` while the node does not accept connections yet.
async fn readyz(node: &NodeProcess) -> Option<u16> {
    let response = client().get(node.url("/readyz")).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Seeded by an address nobody answers, a node is not ready at first, and is after
/// `--gossip.readyTimeout`; it then serves as a cluster of one.
#[tokio::test]
async fn a_seeded_node_without_peers_turns_ready_after_the_ready_timeout() {
    // Gossip port 9 (discard) on loopback: nothing answers there.
    let node = NodeProcess::start(Some(9), &["--gossip.readyTimeout=3s"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(status) = readyz(&node).await {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first, 503, "no peer seen yet: not ready");
    while readyz(&node).await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never turned ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = subscribe(node.url("/channel/alone"), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&node, "alone", serde_json::json!("still served")).await;
    let (events, _, _) = collect(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(events[0].data, "\"still served\"");
}
