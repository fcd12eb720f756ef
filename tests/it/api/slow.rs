//! Slow subscribers: one that never reads cannot hold the others back and is closed;
//! one that falls past its buffer is told so, disconnected, and can resume.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::server::*;

const READERS: usize = 100;
const EVENTS: usize = 10_000;
/// Concurrent publishers; each numbers its own events, so per-publisher order is
/// checkable while the node's batching gets a chance to work.
const PUBLISHERS: usize = 4;

/// A reader's view: per publisher, the numbers in the order they arrived.
type Arrivals = Vec<Vec<u32>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_hold_back_the_others() {
    let _heavy = HEAVY.lock().await;
    let mut config = config();
    config.http.write_stall_timeout = Duration::from_secs(2);
    config.broker.replay_events = 20_000;
    config.broker.subscriber_buffer = 20_000;
    let server = Arc::new(Server::start(config).await);
    // Sends its GET and then never reads a byte (and offers a tiny receive window).
    let mut never =
        RawStream::get_small_buffer(server.addr, "/channel/firehose/client/never").await;
    assert_eq!(never.status, 200);
    // Enough bytes for it alone to fill every socket buffer on the way, so the
    // server's writes to it stall while the others are being served.
    let filler = format!(r#"{{"data":"{}"}}"#, "f".repeat(60 * 1024));
    for sent in 0..100 {
        let (status, answer) = server.post("/channel/firehose/client/never", &filler).await;
        if status == 404 {
            // Its writes stalled past the timeout and the server already closed it:
            // what this test is about. It must not have taken everything first.
            assert!(sent > 0, "closed before any write stalled: {answer}");
            break;
        }
        assert_eq!(status, 200, "{answer}");
    }

    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut stream = open_stream(server.addr, "/channel/firehose", &[]).await;
        readers.push(tokio::spawn(async move {
            let mut arrivals: Arrivals = vec![Vec::new(); PUBLISHERS];
            for _ in 0..EVENTS {
                let frame = stream.next_event().await.expect("stream ended early");
                let data = frame.data.expect("data");
                assert_eq!(data.len(), 102, "payload intact: {data}");
                let mut fields = data[1..].split(' ');
                let mut number = || -> u32 {
                    fields
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("bad payload {data}"))
                };
                let (publisher, n) = (number() as usize, number());
                arrivals[publisher].push(n);
            }
            arrivals
        }));
    }
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let server = server.clone();
            tokio::spawn(async move {
                let padding = "x".repeat(100);
                for n in 0..(EVENTS / PUBLISHERS) as u32 {
                    // A 100-character string: publisher, number, padding.
                    let text = format!("{p} {n} {padding}");
                    let body = format!(r#"{{"data":"{}"}}"#, &text[..100]);
                    server.publish("/channel/firehose", &body).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let published = started.elapsed();
    let deadline = Duration::from_secs(120);
    let expected: Vec<u32> = (0..(EVENTS / PUBLISHERS) as u32).collect();
    let mut first: Option<Arrivals> = None;
    for reader in readers {
        let arrivals = tokio::time::timeout(deadline, reader)
            .await
            .expect("readers finish within the deadline")
            .expect("reader");
        // Every event once, each publisher's in the order it published them...
        for per_publisher in &arrivals {
            assert_eq!(per_publisher, &expected);
        }
        // ...and the same interleaving for every reader (one order per node).
        match &first {
            None => first = Some(arrivals),
            Some(first) => assert_eq!(first, &arrivals),
        }
    }
    let delivered = started.elapsed();
    eprintln!(
        "{EVENTS} events to {READERS} readers: published in {published:?}, all delivered in {delivered:?}"
    );

    // The never-reader stalled the server's writes and was closed for it.
    assert!(
        server.metric("sse_write_stall_disconnects_total").await >= 1,
        "the never-reader was closed for stalling"
    );
    let drained = never.wait_closed(WAIT).await;
    assert!(
        drained < 100 * 60 * 1024,
        "the never-reader got only a part ({drained} bytes) before being closed"
    );
    // The readers have hung up too: nothing is left subscribed.
    server.wait_metric("sse_subscribers", |v| v == 0).await;
    assert_eq!(
        server.metric("sse_slow_subscriber_disconnects_total").await,
        0,
        "the readers kept up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_past_its_buffer_gets_overflow_and_resumes_without_duplicates() {
    let _heavy = HEAVY.lock().await;
    let events = 1000;
    let mut config = config();
    config.broker.replay_events = events;
    config.broker.subscriber_buffer = 32;
    let server = Server::start(config).await;
    let mut slow = RawStream::get_small_buffer(server.addr, "/channel/slow").await;
    assert_eq!(slow.status, 200);
    // 8 KiB events: far more than the socket buffers hold while the reader sleeps.
    let padding = "p".repeat(8 * 1024);
    for n in 0..events {
        server
            .publish(
                "/channel/slow",
                &format!(r#"{{"data":{{"n":{n},"pad":"{padding}"}}}}"#),
            )
            .await;
    }
    // Now it reads: some events in order, then the overflow signal, then the end.
    let mut seen = Vec::new();
    let mut last_id = None;
    let overflow = loop {
        let block = slow
            .next_block()
            .await
            .expect("stream ends only after overflow");
        let frame = Frame::parse(&block);
        match frame.event.as_deref() {
            Some("overflow") => {
                insta::assert_snapshot!("overflow_event", wire(&block));
                break frame;
            }
            _ if frame.data.is_some() => {
                seen.push(frame.json()["n"].as_u64().expect("n"));
                last_id = frame.id;
            }
            _ => {
                if frame.id.is_some() {
                    last_id = frame.id;
                }
            }
        }
    };
    assert!(overflow.id.is_none(), "overflow leaves lastEventId alone");
    assert!(overflow.json()["behind"].as_u64().expect("behind") > 32);
    assert!(overflow.json()["reason"].is_string());
    assert_eq!(slow.next_block().await, None, "disconnected after overflow");
    assert!(seen.len() < events, "it fell behind");
    assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        server.metric("sse_slow_subscriber_disconnects_total").await,
        1
    );

    // Resuming with the last id it saw gives exactly the rest.
    let last_id = last_id.expect("a cursor before the overflow");
    let mut resumed =
        open_stream(server.addr, "/channel/slow", &[("Last-Event-ID", &last_id)]).await;
    server
        .publish("/channel/slow", r#"{"data":{"n":"live"}}"#)
        .await;
    loop {
        let frame = resumed.next_event().await.expect("event");
        assert_ne!(
            frame.event.as_deref(),
            Some("reset"),
            "history still holds them"
        );
        let n = &frame.json()["n"];
        if n == "live" {
            break;
        }
        seen.push(n.as_u64().expect("n"));
    }
    assert_eq!(seen, (0..events as u64).collect::<Vec<_>>());
}

/// Bytes the kernel holds unsent for the server's end of the connection between
/// `server_port` and `client_port` (the `tx_queue` column of `/proc/net/tcp`).
#[cfg(target_os = "linux")]
fn server_send_queue(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port(local)? != server_port || port(remote)? != client_port {
            return None;
        }
        u64::from_str_radix(queues.split(':').next()?, 16).ok()
    })
}

/// A subscriber that stops reading pins a bounded kernel send buffer, not the
/// megabytes the kernel's autotuning would grow it to (security issue: 300 such
/// clients held 1.2 GB). The broker keeps the backlog itself, counted and bounded.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_pins_a_bounded_send_buffer() {
    let _heavy = HEAVY.lock().await;
    let mut config = config();
    config.http.write_stall_timeout = Duration::from_secs(30);
    config.broker.subscriber_buffer = 1_000;
    let server = Server::start(config).await;
    let never = RawStream::get_small_buffer(server.addr, "/channel/pinned").await;
    assert_eq!(never.status, 200);
    let filler = format!(r#"{{"data":"{}"}}"#, "p".repeat(60 * 1024));
    for _ in 0..80 {
        let (status, answer) = server.post("/channel/pinned", &filler).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Let the writes the socket takes land, then read the largest queue seen.
    let mut most = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = server_send_queue(server.addr.port(), never.local_port())
            .expect("the connection in /proc/net/tcp");
        most = most.max(queued);
    }
    assert!(most > 0, "the reader was written to");
    assert!(
        most <= 256 * 1024,
        "{most} bytes pinned in the kernel for one subscriber"
    );
}
