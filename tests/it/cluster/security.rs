use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::node::*;
use crate::common::sse::*;

async fn member_ids(node: &NodeProcess) -> Vec<String> {
    let status = crate::common::net::get_json(&client(), &node.url("/status")).await;
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
    publish(&intruder, "secure", json!({"origin": 9, "n": 1})).await;
    publish(&b, "secure", json!({"origin": 1, "n": 1})).await;

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
    assert!(a.metric("sse_gossip_rejected_total").await > 0);
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
    assert!(a.metric("sse_relay_rejected_total").await >= 2);

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

/// A relay GET from `source` (a loopback address of the test's choosing), answered
/// with its status line.
async fn relay_status_from(source: [u8; 4], node: &NodeProcess) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("bind a loopback source address");
    let mut stream = socket
        .connect(([127, 0, 0, 1], node.http).into())
        .await
        .expect("connect");
    let request =
        "GET /relay/v1?origin=0&from=1&node=x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Without a key, the relay answers only the addresses gossip knows as members: a
/// reader from elsewhere (here another loopback address) is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_relay_answers_only_member_addresses() {
    let open = NodeProcess::start(None, &[]);
    wait_for_members(&open, 1).await;
    let stranger = relay_status_from([127, 0, 0, 3], &open).await;
    assert!(stranger.contains(" 403 "), "{stranger}");
    assert!(open.metric("sse_relay_rejected_total").await >= 1);
    // The member's own address (127.0.0.1, where it advertises) is answered.
    let member = relay_status_from([127, 0, 0, 1], &open).await;
    assert!(member.contains(" 410 "), "{member}");
}

/// With authorization on, a node without a cluster secret refuses to join a cluster,
/// and alone it serves its relay to nobody: tokens would mean nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authorization_a_node_without_a_key_keeps_its_relay_closed() {
    let auth = [
        "--auth.subscribe=true",
        "--auth.jwtSecret=0123456789abcdef0123456789abcdef",
    ];
    let ports = ["--http.server.port=0", "--gossip.port=0"];
    let seed = ["--gossip.hosts=127.0.0.1:1"];
    // A node with tokens and no cluster secret must not start.
    let refused = run_binary(&[&["start"][..], &auth, &seed, &ports].concat(), &[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("gossip.secretKey"), "{stderr}");

    let alone = NodeProcess::start(None, &auth);
    wait_for_members(&alone, 1).await;
    let member = relay_status_from([127, 0, 0, 1], &alone).await;
    assert!(member.contains(" 403 "), "{member}");
}
