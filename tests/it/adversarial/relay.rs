//! The relay under attack: captured request headers replayed or altered against a
//! keyed node, and a fake peer whose relay answers are garbage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use sse_cluster::cluster::crypto::ClusterKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::raw::*;

const SECRET: &str = "adversarial relay secret";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A relay request signed with the cluster key, and the context it signs.
fn signed(key: &ClusterKey, nonce: u8, sent_at: u64, origin: &str, from: u64) -> (String, String) {
    let query = format!("origin={origin}&from={from}&since=0&node=tester");
    let context = format!("GET /relay/v1 origin={origin} from={from} since=0 node=tester");
    (query, key.relay_request([nonce; 16], sent_at, &context))
}

async fn relay_get(node: &NodeProcess, query: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = node.client.get(node.url(&format!("/relay/v1?{query}")));
    if let Some(auth) = auth {
        request = request.header("x-relay-auth", auth);
    }
    request.send().await.expect("relay request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_altered_relay_request_is_refused() {
    let key = tokio::task::spawn_blocking(|| ClusterKey::derive(SECRET))
        .await
        .expect("derive");
    let mut node = start_node(&[&format!("--gossip.secretKey={SECRET}")]).await;

    // Learn the node's origin: an authentic request for another origin gets 410.
    let (query, auth) = signed(&key, 1, now_ms(), "0", 1);
    let answer = relay_get(&node, &query, Some(&auth)).await;
    assert_eq!(answer.status(), 410);
    let origin = answer.headers()["x-relay-origin"]
        .to_str()
        .expect("ASCII origin")
        .to_owned();

    // An authentic request opens the stream, with the node's proof.
    let (query, auth) = signed(&key, 2, now_ms(), &origin, 1);
    let answer = relay_get(&node, &query, Some(&auth)).await;
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-relay-proof"));
    drop(answer);
    let rejected = node.metric("sse_relay_rejected_total").await;

    // The same request captured and replayed.
    assert_eq!(relay_get(&node, &query, Some(&auth)).await.status(), 401);
    // The captured header on another query.
    let other = query.replace("from=1", "from=2");
    assert_eq!(relay_get(&node, &other, Some(&auth)).await.status(), 401);
    // The header with one character changed (its last hex digit).
    let mut altered = auth.clone().into_bytes();
    let last = altered.last_mut().expect("non-empty header");
    *last = if *last == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).expect("ASCII");
    let (query3, _) = signed(&key, 3, now_ms(), &origin, 1);
    assert_eq!(
        relay_get(&node, &query3, Some(&altered)).await.status(),
        401
    );
    // No header, a header under another key, a stale header.
    assert_eq!(relay_get(&node, &query3, None).await.status(), 401);
    let stranger = tokio::task::spawn_blocking(|| ClusterKey::derive("guess"))
        .await
        .expect("derive");
    let (query4, forged) = signed(&stranger, 4, now_ms(), &origin, 1);
    assert_eq!(relay_get(&node, &query4, Some(&forged)).await.status(), 401);
    let (query5, stale) = signed(&key, 5, now_ms() - 10 * 60 * 1000, &origin, 1);
    assert_eq!(relay_get(&node, &query5, Some(&stale)).await.status(), 401);

    node.wait_metric("sse_relay_rejected_total", |n| n >= rejected + 6)
        .await;
    node.assert_healthy().await;
}

/// Relay answers a hostile peer could send, one per connection, in turn. `{seq}` is
/// replaced by a sequence higher than any before, so none is skipped as a duplicate.
const GARBAGE: &[&[u8]] = &[
    b"frame:{\"event\":{\"seq\":{seq},\"route\":{\"channel\":\"relayed\"},\"publish\":{\"data\":\"good\"}}}",
    b"length:\xff\xff\xff\xff",
    b"frame:not json at all",
    b"frame:{\"event\":{\"seq\":{seq},\"route\":{\"channel\":\"a\\nb\"},\"publish\":{\"data\":\"injected\"}}}",
    b"frame:{\"event\":{\"seq\":{seq},\"route\":{\"channel\":\"relayed\"},\"publish\":{\"data\":\"injected\",\"event\":\"x\\ny\"}}}",
    b"frame:{\"event\":{\"seq\":{seq},\"route\":{\"channel\":\"relayed\"},\"publish\":{\"data\":\"injected\",\"evil\":1}}}",
    b"frame:{\"gap\":{\"upto\":18446744073709551615}}",
    b"frame:{\"event\":{\"seq\":18446744073709551615,\"route\":\"all\",\"publish\":{\"data\":\"injected\"}}}",
    b"truncated:\x00\x00\x01\x00{\"event\"",
    b"raw:\x16\x03\x01 this is not HTTP\r\n\r\n",
];

/// The HTTP answer for one garbage entry.
fn answer(entry: &[u8], seq: u64) -> Vec<u8> {
    let text = String::from_utf8_lossy(entry);
    let (kind, rest) = text.split_once(':').expect("kind:payload");
    let payload_start = kind.len() + 1;
    let payload = &entry[payload_start..];
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-sse-cluster-relay\r\nconnection: close\r\n\r\n".to_vec();
    match kind {
        "frame" => {
            let frame = String::from_utf8_lossy(payload).replace("{seq}", &seq.to_string());
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame.as_bytes());
        }
        "length" | "truncated" => out.extend_from_slice(payload),
        _ => {
            let _ = rest;
            return payload.to_vec();
        }
    }
    out
}

/// A fake peer: joins gossip next to `node`, advertises a relay on `relay`, and
/// answers every relay request with the next garbage entry.
async fn hostile_peer(node: &NodeProcess) -> (chitchat::ChitchatHandle, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let relay: SocketAddr = listener.local_addr().expect("relay addr");
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Relaxed);
            let entry = GARBAGE[n % GARBAGE.len()];
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buf[..read]),
                    }
                }
                let _ = socket.write_all(&answer(entry, 100 + n as u64)).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let (_, gossip) = free_ports();
    let gossip_addr = SocketAddr::from(([127, 0, 0, 1], gossip));
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new("hostile".to_owned(), 1, gossip_addr),
        cluster_id: "sse-cluster".into(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: gossip_addr,
        seed_nodes: vec![format!("127.0.0.1:{}", node.gossip)],
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let handle = spawn_chitchat(
        config,
        vec![
            ("http".into(), relay.to_string()),
            ("origin".into(), "abad1dea".into()),
        ],
        &UdpTransport,
    )
    .await
    .expect("hostile gossip");
    (handle, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puller_survives_garbage_relay_answers() {
    let mut node = start_node(&[]).await;
    let mut subscriber = Subscriber::open(&node, "/channel/relayed").await;
    let (peer, served) = hostile_peer(&node).await;

    // The first answer is a well-formed event: the pull path works at all.
    subscriber.read_until(b"data: \"good\"\n\n").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while served.load(Relaxed) < GARBAGE.len() + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the puller stopped reconnecting after {} answers",
            served.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every answer with a bad frame counted; none of them delivered anything.
    node.wait_metric("sse_relay_rejected_total", |n| n >= 7)
        .await;
    let (status, _) = node.post("/channel/relayed", r#"{"data":"local"}"#).await;
    assert_eq!(status, 200);
    subscriber.read_until(b"data: \"local\"\n\n").await;
    let stream = String::from_utf8_lossy(&subscriber.received).into_owned();
    assert!(!stream.contains("injected"), "{stream}");
    node.assert_healthy().await;
    let _ = peer.shutdown().await;
}

/// Issue 20 (5): a refused relay request's query reaches the log escaped (no fake
/// line from a `%0A`, no ESC byte for the terminal), and a flood of refusals writes
/// a few lines, not one each, while the metric counts every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_relay_requests_cannot_forge_or_flood_the_log() {
    let mut node = start_node(&[&format!("--gossip.secretKey={SECRET}")]).await;
    let forged = "origin=0&from=1&since=0&node=x%0A2026-01-01T00:00:00.000000Z%20%20WARN%20sse_cluster:%20forged%1B%5B2J";
    assert_eq!(relay_get(&node, forged, None).await.status(), 401);
    const FLOOD: u64 = 2_000;
    let query = "origin=0&from=1&since=0&node=flood";
    for _ in 0..FLOOD {
        assert_eq!(relay_get(&node, query, None).await.status(), 401);
    }
    node.wait_metric("sse_relay_rejected_total", |n| n == FLOOD + 1)
        .await;

    let log = node.log();
    assert!(
        !log.contains('\u{1b}'),
        "an ESC byte reached the log: {log:?}"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("2026-01-01")),
        "a forged line in the log: {log}"
    );
    assert!(
        log.contains(r#"x\n2026-01-01"#),
        "the value is shown escaped: {log}"
    );
    let lines = log.matches("refused a relay request").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} warnings for {} refusals: {}",
        FLOOD + 1,
        &log[..log.len().min(2000)]
    );
    assert!(log.len() < 4096, "{} bytes of log", log.len());
    node.assert_healthy().await;
}
