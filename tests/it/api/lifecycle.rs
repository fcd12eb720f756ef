//! Channel lifecycle over HTTP: after many subscribe/disconnect cycles nothing of
//! any channel remains once its subscribers are gone and its history has aged out.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::server::*;

const CYCLES: usize = 10_000;
const CONCURRENCY: usize = 50;
const CHANNELS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_vanish_after_their_subscribers_and_history_are_gone() {
    let _heavy = HEAVY.lock().await;
    let replay_age = Duration::from_secs(1);
    let mut config = config();
    config.broker.replay_age = replay_age;
    let server = Arc::new(Server::start(config).await);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let server = server.clone();
        workers.push(tokio::spawn(async move {
            let mut published = 0;
            for cycle in (worker..CYCLES).step_by(CONCURRENCY) {
                let channel = format!("life-{}", cycle % CHANNELS);
                let mut stream =
                    RawStream::get(server.addr, &format!("/channel/{channel}"), &[]).await;
                assert_eq!(stream.status, 200);
                let opening = stream.next_block().await.expect("opening");
                assert!(opening.starts_with("retry:"), "{opening:?}");
                if cycle % 10 == 0 {
                    let answer = server
                        .publish(
                            &format!("/channel/{channel}"),
                            &format!(r#"{{"data":{cycle}}}"#),
                        )
                        .await;
                    assert!(answer["delivered"].as_u64().expect("delivered") >= 1);
                    let event = stream.next_event().await.expect("own event");
                    assert!(event.data.is_some());
                    published += 1;
                }
            }
            published
        }));
    }
    let mut published = 0;
    for worker in workers {
        published += worker.await.expect("worker");
    }
    let took = started.elapsed();
    eprintln!("{CYCLES} subscribe/disconnect cycles, {published} publishes: {took:?}");
    assert_eq!(published, CYCLES / 10);

    // Every subscriber is gone as soon as the server sees its connection close.
    server.wait_metric("sse_subscribers", |v| v == 0).await;
    let status = server.get_json("/status").await;
    assert_eq!(status["channels"], serde_json::json!({}), "{status}");
    assert_eq!(server.metric("sse_channels").await, 0);
    // Channels that had events are kept for their history, then dropped with it.
    assert!(
        server.metric("sse_history_events").await > 0,
        "history is kept for a while"
    );
    tokio::time::sleep(replay_age).await;
    server.wait_metric("sse_dormant_channels", |v| v == 0).await;
    assert_eq!(server.metric("sse_history_events").await, 0);
    assert_eq!(server.metric("sse_channels").await, 0);
    assert_eq!(
        server.metric("sse_events_published_total").await,
        published as u64
    );

    // Connections: once the clients are gone, none is left.
    let mut server = Arc::into_inner(server).expect("workers are done");
    let metrics = server.metrics.clone();
    // The workers' publishes left idle keep-alive connections in this pool.
    server.http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    while metrics
        .open_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        != 0
    {
        assert!(Instant::now() < deadline, "connections still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(took < Duration::from_secs(60), "{took:?}");
    server.stop().await;
}
