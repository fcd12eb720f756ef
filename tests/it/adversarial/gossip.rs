//! Hostile gossip datagrams: oversized random bytes and malformed chitchat messages
//! are dropped and counted, and the node keeps serving.

use std::time::Duration;

use tokio::net::UdpSocket;

use super::raw::*;

/// Pseudo-random bytes from a fixed seed (xorshift), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Datagrams that are not gossip: the largest UDP payload, and short ones shaped
/// like chitchat messages (a message tag, then truncated or nonsense fields).
fn hostile_datagrams() -> Vec<Vec<u8>> {
    let mut datagrams = vec![
        // The first byte is no chitchat message tag.
        [&[0xee][..], &noise(65_506, 1)].concat(),
        [&[0xee][..], &noise(65_506, 2)].concat(),
        vec![0xee],
    ];
    for tag in 0u8..4 {
        datagrams.push(vec![tag]);
        datagrams.push(vec![tag, 0xff, 0xff]);
        datagrams.push(
            [
                &[tag, 0xff, 0xff, 0xff, 0x7f][..],
                &noise(64, 3 + u64::from(tag)),
            ]
            .concat(),
        );
    }
    datagrams
}

async fn flood_and_check(extra: &[&str]) {
    let mut node = start_node(extra).await;
    let before = node.metric("sse_gossip_rejected_total").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let target = ("127.0.0.1", node.gossip);
    let datagrams = hostile_datagrams();
    for datagram in &datagrams {
        socket.send_to(datagram, target).await.expect("send");
        // Paced, so the node's receive buffer never drops one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = datagrams.len() as u64;
    // Every one is refused (one may be a valid prefix without a key: allow none).
    node.wait_metric("sse_gossip_rejected_total", |n| n >= before + sent)
        .await;
    let status = node.json("/status").await;
    assert_eq!(
        status["gossip"]["member_count"], 1,
        "no member from hostile datagrams: {status}"
    );
    let (code, answer) = node.post("/channel/after", r#"{"data":1}"#).await;
    assert_eq!(code, 200, "{answer}");
    node.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_gossip_is_counted_and_dropped() {
    flood_and_check(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_gossip_is_refused_by_a_keyed_node() {
    flood_and_check(&["--gossip.secretKey=adversarial gossip secret"]).await;
}

/// The decompression bomb an attack found: one datagram of chitchat's magic and an
/// Ack of about 2,000 tiny zstd blocks that each inflate to 64 KiB. Before the bound,
/// one raised a node's peak memory from 8 MB to about 200 MB and a few a second held
/// publishes for seconds. Now each is dropped before it inflates, and counted.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_decompression_bomb_is_dropped_before_it_inflates() {
    let mut node = start_node(&[]).await;
    let bomb = sse_cluster::fuzzing::gossip_ack_of_zero_blocks(2_000, 65_535);
    assert!(bomb.len() <= 65_507, "one datagram: {}", bomb.len());
    let before = node.metric("sse_gossip_rejected_total").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    const BOMBS: u64 = 10;
    for _ in 0..BOMBS {
        socket
            .send_to(&bomb, ("127.0.0.1", node.gossip))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.wait_metric("sse_gossip_rejected_total", |n| n >= before + BOMBS)
        .await;
    let peak_kib = node.peak_rss_kib();
    assert!(
        peak_kib < 64 * 1024,
        "the node's peak memory reached {peak_kib} KiB"
    );
    let (code, answer) = node.post("/channel/after", r#"{"data":1}"#).await;
    assert_eq!(code, 200, "{answer}");
    node.assert_healthy().await;
}
