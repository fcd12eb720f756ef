use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::common::node::*;
use crate::common::sse::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_joined_through_one_seed_deliver_every_event_exactly_once() {
    let seed = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(seed.gossip), &[]);
    let c = NodeProcess::start(Some(seed.gossip), &[]);
    let nodes = [&seed, &b, &c];
    for node in nodes {
        wait_for_members(node, 3).await;
    }
    let mut subscribers = Vec::new();
    for node in nodes {
        for _ in 0..2 {
            subscribers.push(subscribe(node.url("/channel/news"), None).await);
        }
    }
    // Every node publishes, concurrently.
    const PER_NODE: u64 = 60;
    let mut publishers = Vec::new();
    for (origin, node) in nodes.iter().enumerate() {
        let url = node.url("/channel/news");
        publishers.push(tokio::spawn(async move {
            let client = client();
            for n in 1..=PER_NODE {
                let response = client
                    .post(&url)
                    .json(&json!({"data": {"origin": origin, "n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let expected: HashMap<u64, u64> = (0..3).map(|o| (o, PER_NODE)).collect();
    for (i, rx) in subscribers.iter_mut().enumerate() {
        let (events, named, _) = collect(rx, 3 * PER_NODE as usize, Duration::from_secs(20)).await;
        assert!(named.is_empty(), "subscriber {i} got signals {named:?}");
        check_exactly_once(&events, &expected);
        // Nothing more arrives: no late duplicates.
        let (extra, _, _) = collect(rx, 1, Duration::from_millis(500)).await;
        assert!(
            extra.is_empty(),
            "subscriber {i} got extra events {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_and_its_subscribers_resume_elsewhere_without_gap_or_duplicate() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    let mut c = NodeProcess::start(Some(a.gossip), &[]);
    for node in [&a, &b, &c] {
        wait_for_members(node, 3).await;
    }
    let mut on_c = subscribe(c.url("/channel/feed"), None).await;
    let mut on_b = subscribe(b.url("/channel/feed"), None).await;

    // Publish continuously on `a` while `c` is killed and restarted.
    const TOTAL: u64 = 300;
    let url = a.url("/channel/feed");
    let publisher = tokio::spawn(async move {
        let client = client();
        for n in 1..=TOTAL {
            let response = client
                .post(&url)
                .json(&json!({"data": {"origin": 0, "n": n}}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let (before, _, _) = collect(&mut on_c, 40, Duration::from_secs(10)).await;
    assert_eq!(before.len(), 40);
    c.kill9();
    let (rest, _, ended) = collect(&mut on_c, 1000, Duration::from_secs(3)).await;
    assert!(ended, "the stream of a killed node ends");
    let seen_on_c: Vec<Event> = before.into_iter().chain(rest).collect();
    let last_id = Some(seen_on_c.last().unwrap().id.clone());

    // The browser reconnects to another node with its Last-Event-ID.
    let mut resumed = subscribe(b.url("/channel/feed"), last_id).await;
    c.restart();
    wait_for_members(&c, 3).await;
    let mut on_new_c = subscribe(c.url("/channel/feed"), None).await;

    publisher.await.unwrap();
    let remaining = TOTAL as usize - seen_on_c.len();
    let (after, named, _) = collect(&mut resumed, remaining, Duration::from_secs(20)).await;
    assert!(named.is_empty(), "no reset or gap expected: {named:?}");
    let all: Vec<Event> = seen_on_c.into_iter().chain(after).collect();
    check_exactly_once(&all, &HashMap::from([(0, TOTAL)]));

    // `b` kept delivering throughout.
    let (on_b_events, _, _) = collect(&mut on_b, TOTAL as usize, Duration::from_secs(10)).await;
    check_exactly_once(&on_b_events, &HashMap::from([(0, TOTAL)]));

    // The restarted node rejoined: its new subscriber gets new events from `a` (after,
    // possibly, some it caught up on while starting), each once.
    publish(&a, "feed", json!({"origin": 0, "n": TOTAL + 1})).await;
    let mut fresh = Vec::new();
    while !fresh
        .iter()
        .any(|e: &Event| e.data.contains(&format!("\"n\":{}", TOTAL + 1)))
    {
        let (more, _, ended) = collect(&mut on_new_c, 1, Duration::from_secs(10)).await;
        assert!(
            !more.is_empty() && !ended,
            "restarted node relays again; got {fresh:?}"
        );
        fresh.extend(more);
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        fresh.iter().all(|e| seen.insert(e.data.clone())),
        "no duplicates: {fresh:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_all_channels_and_to_one_client_works_across_nodes() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    wait_for_members(&a, 2).await;
    wait_for_members(&b, 2).await;
    let mut x_on_b = subscribe(b.url("/channel/x"), None).await;
    let mut y_on_b = subscribe(b.url("/channel/y"), None).await;
    let mut alice_on_b = subscribe(b.url("/channel/y/client/alice"), None).await;

    // To every channel, published on a node that has none of them.
    let response = client()
        .post(a.url("/channel"))
        .json(&json!({"data": {"origin": 0, "n": 1}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    // To one client, published on a node it is not connected to.
    let response = client()
        .post(a.url("/channel/y/client/alice"))
        .json(&json!({"data": "just for alice"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    for (name, rx) in [("x", &mut x_on_b), ("y", &mut y_on_b)] {
        let (events, _, _) = collect(rx, 2, Duration::from_secs(5)).await;
        assert_eq!(
            events.len(),
            1,
            "{name}: the broadcast only, got {events:?}"
        );
        assert!(events[0].data.contains("\"n\":1"));
    }
    let (events, _, _) = collect(&mut alice_on_b, 2, Duration::from_secs(5)).await;
    let data: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        data,
        [json!({"origin": 0, "n": 1}), json!("just for alice")]
    );
}

/// After `kill -9` of one of three nodes and a start on new ports, `/status` counts
/// the three live members; the dead one stays listed with `alive: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_only_the_living() {
    let a = NodeProcess::start(None, &[]);
    let b = NodeProcess::start(Some(a.gossip), &[]);
    let mut c = NodeProcess::start(Some(a.gossip), &[]);
    for node in [&a, &b, &c] {
        wait_for_members(node, 3).await;
    }
    c.kill9();
    let d = NodeProcess::start(Some(a.gossip), &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = crate::common::net::get_json(&client(), &a.url("/status")).await;
        let members = status["gossip"]["members"].as_array().unwrap().clone();
        let dead = members.iter().filter(|m| m["alive"] == false).count();
        let live = members.len() - dead;
        if dead == 1 && live == 3 {
            assert_eq!(status["gossip"]["member_count"], 3, "{status}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed node was never listed as dead beside three live ones: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(d);
}
