use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn metric(node: &NodeProcess, name: &str) -> u64 {
    let text = client()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

async fn member_ids(node: &NodeProcess) -> Vec<String> {
    let status: Value = client()
        .get(node.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["gossip"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_key_is_never_admitted_and_cannot_inject_events() {
    let key = "--gossip.secretKey=correct horse battery staple";
    let a = NodeProcess::start(None, &[key, "--gossip.nodeId=a"]);
    let b = NodeProcess::start(Some(a.gossip), &[key, "--gossip.nodeId=b"]);
    let intruder = NodeProcess::start(
        Some(a.gossip),
        &["--gossip.secretKey=guess", "--gossip.nodeId=intruder"],
    );
    wait_for_members(&a, 2).await;
    wait_for_members(&b, 2).await;

    let mut on_a = subscribe(a.url("/channel/secure"), None).await;
    // Give the intruder many gossip rounds to try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish(&intruder, "secure", json!({"data": {"origin": 9, "n": 1}})).await;
    publish(&b, "secure", json!({"data": {"origin": 1, "n": 1}})).await;

    // The keyed relay delivers b's event; the intruder's never arrives.
    let (events, _, _) = collect(&mut on_a, 2, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "only the member's event: {events:?}");
    assert!(events[0].data.contains("\"origin\":1"));
    for node in [&a, &b] {
        let ids = member_ids(node).await;
        assert!(
            !ids.contains(&"intruder".to_owned()),
            "intruder admitted: {ids:?}"
        );
    }
    assert_eq!(
        member_ids(&intruder).await,
        ["intruder"],
        "the intruder learns no member"
    );
    assert!(metric(&a, "sse_gossip_rejected_total").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_readers_without_the_key() {
    let a = NodeProcess::start(None, &["--gossip.secretKey=s3cret"]);
    wait_for_members(&a, 1).await;
    let origin = client()
        .get(a.url("/relay/v1?origin=0&from=1&node=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(origin.status(), 401, "no token");
    let forged = client()
        .get(a.url("/relay/v1?origin=0&from=1&node=x"))
        .header(
            "x-relay-auth",
            format!("v1.1.{}.{}", "00".repeat(16), "11".repeat(32)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "forged token");
    assert!(metric(&a, "sse_relay_rejected_total").await >= 2);

    // Without a key the relay is open (and the node said so at start).
    let open = NodeProcess::start(None, &[]);
    wait_for_members(&open, 1).await;
    let response = client()
        .get(open.url("/relay/v1?origin=0&from=1&node=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410, "open relay answers (wrong origin)");
}
