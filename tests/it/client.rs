//! The Rust client (`sse-cluster-client`) against real `sse-cluster` processes on
//! loopback: what it publishes its subscriber reads, a retried publish keeps its
//! idempotency key, and a subscriber whose node dies resumes on the next one.

use std::time::Duration;

use serde_json::json;
use sse_cluster_client::{Error, Publish, Publisher, Signal, Subscriber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::common::node::{wait_for_members, NodeProcess};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_publisher_sends_the_subscriber_reads_once() {
    let node = start_node(None);
    wait_for_members(&node, 1).await;
    let mut subscriber = Subscriber::builder([node.url("")], "news").build().unwrap();
    timeout(WAIT, subscriber.connect()).await.unwrap().unwrap();
    let publisher = Publisher::builder([node.url("")]).build().unwrap();

    let first = publisher
        .publish("news", &Publish::new("hello"))
        .await
        .unwrap();
    assert_eq!((first.delivered, first.duplicate), (1, false));
    assert!(!first.key.is_empty(), "the publisher made a key");
    let named = Publish::new(json!({"n": 2})).event("ping").retry(1500);
    let second = publisher.publish("news", &named).await.unwrap();
    assert_eq!(
        next(&mut subscriber).await,
        message("message", first.id.as_deref(), "\"hello\"")
    );
    assert_eq!(
        next(&mut subscriber).await,
        message("ping", second.id.as_deref(), r#"{"n":2}"#)
    );
    assert_eq!(subscriber.last_event_id(), second.id.unwrap());

    // The same key twice: the second is a duplicate with the first one's cursor.
    let keyed = Publish::new(3).id("order-3");
    let once = publisher.publish("news", &keyed).await.unwrap();
    let again = publisher.publish("news", &keyed).await.unwrap();
    assert_eq!((again.duplicate, again.delivered), (true, 0));
    assert_eq!(again.id, once.id);
    assert_eq!(again.key, "order-3");
    publisher
        .publish("news", &Publish::new("marker"))
        .await
        .unwrap();
    assert_eq!(data(next(&mut subscriber).await), "3");
    assert_eq!(
        data(next(&mut subscriber).await),
        "\"marker\"",
        "3 came once"
    );

    // A bad request is an error at once, not retried.
    let reserved = publisher
        .publish("news", &Publish::new(1).event("reset"))
        .await;
    assert!(
        matches!(reserved, Err(Error::Status { status: 400, .. })),
        "{reserved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_answer_is_lost_is_retried_on_the_next_node_and_delivered_once() {
    let node = start_node(None);
    wait_for_members(&node, 1).await;
    let mut subscriber = Subscriber::builder([node.url("")], "orders")
        .build()
        .unwrap();
    timeout(WAIT, subscriber.connect()).await.unwrap().unwrap();

    // First a node that refuses connections, then one that passes the request on to
    // the broker and drops the answer: only the third attempt gets an answer, and
    // each attempt carried the same key.
    let refusing = format!("http://127.0.0.1:{}", crate::common::net::free_ports().0);
    let lossy = answer_losing_proxy(node.http).await;
    let publisher = Publisher::builder([refusing, lossy, node.url("")])
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let answer = publisher
        .publish("orders", &Publish::new(json!({"order": 1})))
        .await
        .unwrap();
    assert!(
        answer.duplicate,
        "the broker had the first copy: {answer:?}"
    );
    assert_eq!(answer.delivered, 0);

    publisher
        .publish("orders", &Publish::new("marker"))
        .await
        .unwrap();
    assert_eq!(data(next(&mut subscriber).await), r#"{"order":1}"#);
    assert_eq!(
        data(next(&mut subscriber).await),
        "\"marker\"",
        "the order came once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_node_dies_resumes_on_the_next_node_exactly() {
    let mut a = start_node(None);
    let b = start_node(Some(a.gossip));
    wait_for_members(&a, 2).await;
    wait_for_members(&b, 2).await;

    let mut moving = Subscriber::builder([a.url(""), b.url("")], "feed")
        .build()
        .unwrap();
    timeout(WAIT, moving.connect()).await.unwrap().unwrap();
    assert_eq!(moving.node(), Some(a.url("")));
    // A subscriber on `b` keeps the channel (and its history) there.
    let mut staying = Subscriber::builder([b.url("")], "feed").build().unwrap();
    timeout(WAIT, staying.connect()).await.unwrap().unwrap();

    let on_a = Publisher::builder([a.url("")]).build().unwrap();
    for n in 1..=3 {
        on_a.publish("feed", &Publish::new(n)).await.unwrap();
    }
    for n in 1..=3 {
        assert_eq!(data(next(&mut moving).await), n.to_string());
        assert_eq!(data(next(&mut staying).await), n.to_string());
    }

    a.kill9();
    let on_b = Publisher::builder([b.url("")]).build().unwrap();
    for n in 4..=6 {
        on_b.publish("feed", &Publish::new(n)).await.unwrap();
    }
    // Missed while it reconnected (the nodes say `retry: 300`), replayed by `b`,
    // then live events: each once, in order, and no `reset`.
    let live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        on_b.publish("feed", &Publish::new(7)).await.unwrap();
    });
    for n in 4..=7 {
        assert_eq!(data(next(&mut moving).await), n.to_string());
    }
    live.await.unwrap();
    assert_eq!(moving.node(), Some(b.url("")));
}

async fn next(subscriber: &mut Subscriber) -> Signal {
    timeout(WAIT, subscriber.next())
        .await
        .expect("an event in time")
        .expect("no error")
}

fn message(event: &str, id: Option<&str>, data: &str) -> Signal {
    Signal::Message {
        event: event.into(),
        id: id
            .expect("a single-channel publish answers a cursor")
            .into(),
        data: data.into(),
    }
}

fn data(signal: Signal) -> String {
    match signal {
        Signal::Message { data, .. } => data,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A node address that forwards one request at a time to the broker on `port` and
/// closes the connection once the broker starts answering, so the client never
/// sees the answer of a request the broker took.
async fn answer_losing_proxy(port: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let request = read_request(&mut client).await;
            let mut broker = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            broker.write_all(&request).await.unwrap();
            let mut first = [0u8; 1];
            let _ = broker.read(&mut first).await;
            drop(client);
        }
    });
    format!("http://{addr}")
}

/// One request's head and body (by its `content-length`).
async fn read_request(socket: &mut TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "request ended early");
        request.extend_from_slice(&buf[..n]);
        let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if request.len() >= head_end + 4 + length {
            return request;
        }
    }
}

/// A node that tells clients to reconnect after 300 ms; `seed` is another node's
/// gossip port.
fn start_node(seed: Option<u16>) -> NodeProcess {
    NodeProcess::builder()
        .seed(seed)
        .args(&["--http.server.retry=300ms"])
        .spawn()
}
