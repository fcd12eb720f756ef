//! A real network partition: three nodes in their own network namespaces on a
//! bridge; one node's link is cut while both sides publish, then healed.

use std::collections::HashMap;
use std::time::Duration;

use super::netns::*;
use crate::common::node::*;
use crate::common::sse::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_catches_up_exactly_once_after_the_network_heals() {
    let Some(hosts) = hosts_or_skip(3) else {
        return;
    };
    let _nodes: Vec<KillOnDrop> = (1..=3).map(|i| hosts.node(i, &[])).collect();
    for i in 1..=3 {
        wait_for_members_at(&hosts.url(i, ""), 3).await;
    }
    // Subscribers: on nodes 1 and 2 from the host, on node 3 from inside its namespace.
    let mut on_1 = subscribe(hosts.url(1, "/channel/p"), None).await;
    let mut on_2 = subscribe(hosts.url(2, "/channel/p"), None).await;
    let (_curl, mut on_3) = hosts.subscribe_inside(3, "p");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Before, during and after the cut, both sides publish.
    let mut n = 0;
    for _ in 0..10 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
    }
    hosts.cut(3);
    for _ in 0..20 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // While cut, node 1's subscribers see none of node 3's new events.
    let (during, _, _) = collect(&mut on_1, 100, Duration::from_millis(500)).await;
    assert!(
        during
            .iter()
            .filter(|e| e.data.contains("\"origin\":3"))
            .count()
            <= 10,
        "node 3's events crossed a cut link"
    );
    hosts.heal(3);
    for _ in 0..10 {
        n += 1;
        hosts.publish_from_host(1, "p", n).await;
        hosts.publish_inside(3, "p", &format!("{{\"origin\":3,\"n\":{n}}}"));
    }
    let expected = HashMap::from([(1, n), (3, n)]);
    let mut first = during;
    let (rest, named, _) = collect(
        &mut on_1,
        2 * n as usize - first.len(),
        Duration::from_secs(30),
    )
    .await;
    first.extend(rest);
    assert!(
        named.is_empty(),
        "no gap expected within the relay queue bound: {named:?}"
    );
    check_exactly_once(&first, &expected);
    for (name, rx) in [("node 2", &mut on_2), ("node 3", &mut on_3)] {
        let (events, named, _) = collect(rx, 2 * n as usize, Duration::from_secs(30)).await;
        assert!(named.is_empty(), "{name}: unexpected signals {named:?}");
        check_exactly_once(&events, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_longer_than_the_queue_bound_gets_an_explicit_gap() {
    let Some(hosts) = hosts_or_skip(3) else {
        return;
    };
    let _nodes: Vec<KillOnDrop> = [1, 3]
        .iter()
        .map(|i| hosts.node(*i, &["--relay.queueEvents=5"]))
        .collect();
    for i in [1, 3] {
        wait_for_members_at(&hosts.url(i, ""), 2).await;
    }
    let (_curl, mut on_3) = hosts.subscribe_inside(3, "g");
    tokio::time::sleep(Duration::from_millis(300)).await;
    hosts.publish_from_host(1, "g", 1).await;
    let (first, _, _) = collect(&mut on_3, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);

    // Cut node 3 off long enough for its relay stream to time out (2 s), while node 1
    // accepts four times what its queue for peers holds.
    hosts.cut(3);
    for n in 2..=21 {
        hosts.publish_from_host(1, "g", n).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    hosts.heal(3);
    hosts.publish_from_host(1, "g", 22).await;

    // Wait for the last event; everything before it arrives first.
    let mut events = Vec::new();
    let mut named = Vec::new();
    while !events.iter().any(|e: &Event| e.data.contains("\"n\":22")) {
        let (more, signals, ended) = collect(&mut on_3, 1, Duration::from_secs(20)).await;
        assert!(
            !(ended || more.is_empty() && signals.is_empty()),
            "stalled: {named:?} {events:?}"
        );
        events.extend(more);
        named.extend(signals);
    }
    let gap = named
        .iter()
        .find(|e| e.event == "gap")
        .unwrap_or_else(|| panic!("expected an explicit gap, got {named:?} and {events:?}"));
    let upto = serde_json::from_str::<serde_json::Value>(&gap.data).unwrap()["upto"]
        .as_u64()
        .unwrap();
    let ns: Vec<u64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Node 1's events have sequence = n here, so the gap names exactly what is missing:
    // what follows it is the queued tail, contiguous, each once.
    assert!(
        (6..22).contains(&upto),
        "the queue held at most 5 events: gap up to {upto}"
    );
    assert_eq!(
        ns,
        ((upto + 1)..=22).collect::<Vec<_>>(),
        "the tail after the gap"
    );
}
