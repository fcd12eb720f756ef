//! Oversized and slow input: huge headers, long names, thousands of channels, and a
//! client that sends its request head one byte per second.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::raw::*;

/// A fresh client gets `/healthz` quickly while the attack is under way.
async fn assert_serves_others(node: &NodeProcess) {
    let started = Instant::now();
    let answer = raw_request(
        node.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "healthz took {:?}",
        started.elapsed()
    );
}

fn request_with_header(value_len: usize) -> Vec<u8> {
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', value_len));
    request.extend_from_slice(b"\r\n\r\n");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_and_the_node_keeps_serving() {
    let mut node = start_node(&[]).await;
    // Request heads are capped at --http.server.maxHeaderBytes (16 KiB by default):
    // a larger one is answered 431 (read back thanks to the lingering close; past a
    // megabyte the node may hang up first), and the node keeps serving.
    let answer = raw_request(node.addr(), &request_with_header(12 * 1024)).await;
    assert_eq!(
        answer.status,
        Some(200),
        "a 12 KiB header is within the cap: {answer:?}"
    );
    for size in [20 * 1024, 100 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
        let answer = raw_request(node.addr(), &request_with_header(size)).await;
        eprintln!("header of {size} bytes: {:?}", answer.status);
        if size <= 100 * 1024 {
            assert_eq!(answer.status, Some(431), "{size}-byte header: {answer:?}");
        } else {
            assert!(
                answer.status.is_none_or(|s| s == 431),
                "{size}-byte header: {answer:?}"
            );
        }
        assert_serves_others(&node).await;
    }
    // Each refusal is counted; the two below a megabyte were certainly answered.
    let refused = node
        .metric("sse_request_errors_total{kind=\"header_too_large\"}")
        .await;
    assert!((2..=4).contains(&refused), "431s counted: {refused}");
    // Many headers rather than one long one.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_vec();
    for i in 0..10_000 {
        request.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = raw_request(node.addr(), &request).await;
    assert!(
        answer.status.is_none_or(|s| (400..500).contains(&s)),
        "10,000 headers: {answer:?}"
    );
    assert_serves_others(&node).await;
    node.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_channel_and_client_names_are_refused_with_400() {
    let mut node = start_node(&[]).await;
    let longest = "c".repeat(128);
    for name in ["c".repeat(129), "c".repeat(10_000)] {
        for path in [
            format!("/channel/{name}"),
            format!("/channel/{longest}/client/{name}"),
        ] {
            let answer = raw_request(
                node.addr(),
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(answer.status, Some(400), "GET of {} bytes", path.len());
            assert!(answer.text.contains("\"error\""), "{}", answer.text);
            let (status, answer) = node.post(&path, r#"{"data":1}"#).await;
            assert_eq!(status, 400, "POST of {} bytes: {answer}", path.len());
        }
    }
    // The longest allowed names work.
    let mut subscriber =
        Subscriber::open(&node, &format!("/channel/{longest}/client/{longest}")).await;
    let (status, _) = node
        .post(&format!("/channel/{longest}"), r#"{"data":"long"}"#)
        .await;
    assert_eq!(status, 200);
    subscriber.read_until(b"data: \"long\"\n\n").await;
    node.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_channels_come_and_go() {
    const CHANNELS: usize = 3_000;
    // Every subscriber connects from 127.0.0.1.
    let mut node = start_node(&["--http.server.maxConnectionsPerAddress=5000"]).await;
    let mut sockets = Vec::with_capacity(CHANNELS);
    for i in 0..CHANNELS {
        let mut socket = TcpStream::connect(node.addr()).await.expect("connect");
        socket
            .write_all(format!("GET /channel/many-{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .expect("subscribe");
        sockets.push(socket);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = node.json("/status").await;
        let channels = status["channels"].as_object().expect("channels").len();
        if channels == CHANNELS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{channels} of {CHANNELS} channels"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(node.metric("sse_subscribers").await, CHANNELS as u64);
    assert_serves_others(&node).await;

    drop(sockets);
    loop {
        let status = node.json("/status").await;
        let channels = status["channels"].as_object().expect("channels").len();
        if channels == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{channels} channels left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.wait_metric("sse_subscribers", |n| n == 0).await;
    node.assert_healthy().await;
}

/// A client that sends its request head one byte per second (slow-loris) is cut off
/// at `--http.server.headerTimeout` with a 408, and everyone else is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_cut_off_and_does_not_stall_anyone_else() {
    let mut node = start_node(&["--http.server.headerTimeout=3s"]).await;
    let mut loris = Vec::new();
    for _ in 0..20 {
        loris.push(TcpStream::connect(node.addr()).await.expect("connect"));
    }
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaa";
    for byte in head.iter().take(5) {
        for socket in &mut loris {
            let _ = socket.write_all(&[*byte]).await;
        }
        assert_serves_others(&node).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Past the deadline: each trickling connection got a 408 and was closed.
    for socket in &mut loris {
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "a slow-loris connection was still open past the header deadline"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    }
    let timed_out = node
        .metric("sse_request_errors_total{kind=\"header_timeout\"}")
        .await;
    assert_eq!(timed_out, loris.len() as u64, "408s counted");
    node.assert_healthy().await;
}

/// An HTTP keep-alive connection left idle after its request (no next request) is
/// closed by the node at `--http.server.headerTimeout`: idle connections do not pile
/// up, whether or not their client is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_deadline() {
    let node = start_node(&["--http.server.headerTimeout=2s"]).await;
    let mut socket = TcpStream::connect(node.addr()).await.expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, socket.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head:?}");
    assert!(!head.contains("connection: close"), "kept alive: {head:?}");
    let idle = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), socket.read_to_end(&mut rest))
        .await
        .expect("the node closes an idle keep-alive connection")
        .expect("read to the end");
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}, before the deadline"
    );
}
