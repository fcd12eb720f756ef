//! The load: SSE subscribers and rate-paced publishers over raw HTTP/1.1 on tokio
//! sockets. Every payload carries its send time on the benchmark's own clock, so
//! subscribers in this process measure publish-to-receive latency directly.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::http::{parse_response_head, ChunkedDecoder, ResponseHead};
use super::sse::{encode_payload, payload_sent_ns};
use super::PubFormat;
use sse_cluster_client::Parser;

/// Counters shared by every task of a run.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Zero of the payload clock.
    pub(crate) epoch: Instant,
    pub(crate) delivered: AtomicU64,
    /// Payload-clock time of the latest delivery.
    pub(crate) last_delivery_ns: AtomicU64,
    pub(crate) stream_errors: AtomicU64,
    pub(crate) foreign_events: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    /// Deliveries the accepted publishes call for.
    pub(crate) expected: AtomicU64,
    /// Publishes handed out so far; picks the channel of the next one.
    pub(crate) next_publish: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            foreign_events: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            next_publish: AtomicU64::new(0),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Read buffer per subscriber: small, since thousands are open at once.
const SUB_READ_BUF: usize = 4096;

/// Opens one subscriber stream: returns once the server answered 200, with the
/// connection and any body bytes that came with the head.
pub(crate) async fn open_subscriber(
    addr: &str,
    request: &[u8],
) -> Result<(TcpStream, ResponseHead, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("send subscribe request: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read subscribe response: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, len)) = parse_response_head(&buf)? {
            if head.status != 200 {
                let body = String::from_utf8_lossy(&buf[len..]);
                return Err(format!(
                    "subscribe answered {}: {}",
                    head.status,
                    body.trim()
                ));
            }
            return Ok((stream, head, buf.split_off(len)));
        }
    }
}

/// Reads one subscriber stream until `stop`, counting deliveries. Returns the
/// latency of each delivery in nanoseconds.
pub(crate) async fn run_subscriber(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    head: ResponseHead,
    first: Vec<u8>,
    mut stop: watch::Receiver<bool>,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    let mut parser = Parser::new();
    let mut chunked = head.chunked.then(ChunkedDecoder::default);
    let mut decoded = Vec::new();
    let mut buf = vec![0u8; SUB_READ_BUF];
    let mut pending = first;
    loop {
        if !pending.is_empty() {
            let now = shared.now_ns();
            let body: &[u8] = match &mut chunked {
                Some(decoder) => {
                    decoded.clear();
                    if decoder.decode(&pending, &mut decoded).is_err() {
                        shared.stream_errors.fetch_add(1, Relaxed);
                        return latencies;
                    }
                    &decoded
                }
                None => &pending,
            };
            let mut count = 0;
            let mut foreign = 0;
            parser.feed(body, |event| {
                match payload_sent_ns(event.data().as_bytes()) {
                    Some(sent) => {
                        latencies.push(now.saturating_sub(sent));
                        count += 1;
                    }
                    None => foreign += 1,
                }
            });
            if count > 0 {
                shared.delivered.fetch_add(count, Relaxed);
                shared.last_delivery_ns.fetch_max(now, Relaxed);
            }
            if foreign > 0 {
                shared.foreign_events.fetch_add(foreign, Relaxed);
            }
            if chunked.as_ref().is_some_and(ChunkedDecoder::is_done) {
                break;
            }
            pending.clear();
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return latencies,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            },
        }
    }
    // The stream ended on its own: only a server closing it early does that.
    if !*stop.borrow() {
        shared.stream_errors.fetch_add(1, Relaxed);
    }
    latencies
}

/// What one publisher needs to know.
#[derive(Debug, Clone)]
pub(crate) struct PublisherPlan {
    pub(crate) addr: String,
    pub(crate) host: String,
    /// Request path per channel.
    pub(crate) paths: Arc<Vec<String>>,
    /// Subscribers connected per channel: the deliveries one publish calls for.
    pub(crate) fanout: Arc<Vec<u64>>,
    pub(crate) format: PubFormat,
    /// Events per request; more than 1 is a bulk publish.
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
    /// Time between this publisher's publishes; zero for back-to-back.
    pub(crate) interval: Duration,
    pub(crate) start: tokio::time::Instant,
    pub(crate) until: tokio::time::Instant,
}

/// Publishes on a keep-alive connection until `plan.until`, paced to
/// `plan.interval`. A publish that falls behind schedule goes out at once.
pub(crate) async fn run_publisher(shared: Arc<Shared>, plan: PublisherPlan) {
    let mut connection: Option<TcpStream> = None;
    let mut response = Vec::with_capacity(1024);
    let mut request = Vec::with_capacity(plan.payload_bytes + 256);
    let mut sent: u64 = 0;
    loop {
        let due = plan.start
            + plan
                .interval
                .saturating_mul(sent.min(u32::MAX as u64) as u32);
        if due >= plan.until || tokio::time::Instant::now() >= plan.until {
            break;
        }
        tokio::time::sleep_until(due).await;
        sent += 1;
        if connection.is_none() {
            match TcpStream::connect(&plan.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    connection = Some(stream);
                }
                Err(error) => {
                    report_publish_error(&shared, &format!("connect {}: {error}", plan.addr));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(stream) = connection.as_mut() else {
            continue;
        };
        let k = shared.next_publish.fetch_add(1, Relaxed) as usize;
        let channel = k % plan.paths.len();
        build_request(&mut request, &plan, &plan.paths[channel], shared.now_ns());
        match exchange(stream, &request, &mut response).await {
            Ok((status, close)) => {
                if (200..300).contains(&status) {
                    let events = plan.batch as u64;
                    shared.published.fetch_add(events, Relaxed);
                    shared
                        .expected
                        .fetch_add(events * plan.fanout[channel], Relaxed);
                } else {
                    report_publish_error(
                        &shared,
                        &format!(
                            "publish answered {status}: {}",
                            String::from_utf8_lossy(&response).trim()
                        ),
                    );
                }
                if close {
                    connection = None;
                }
            }
            Err(error) => {
                report_publish_error(&shared, &error);
                connection = None;
            }
        }
    }
}

fn report_publish_error(shared: &Shared, error: &str) {
    // The first few say what is wrong; the count says how often.
    if shared.publish_errors.fetch_add(1, Relaxed) < 5 {
        eprintln!("bench: publish error: {error}");
    }
}

fn build_request(request: &mut Vec<u8>, plan: &PublisherPlan, path: &str, now_ns: u64) {
    let payload = encode_payload(now_ns, plan.payload_bytes);
    let (content_type, body) = match (plan.format, plan.batch) {
        (PubFormat::SseCluster, 1) => ("application/json", format!("{{\"data\":\"{payload}\"}}")),
        // A bulk publish: the same event body on every line (each its own event).
        (PubFormat::SseCluster, n) => (
            "application/x-ndjson",
            format!("{{\"data\":\"{payload}\"}}\n").repeat(n),
        ),
        (PubFormat::Raw, _) => ("text/plain", payload),
    };
    request.clear();
    request.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            plan.host,
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body.as_bytes());
}

/// Sends one request and reads its whole response. Returns the status and whether
/// the server closes the connection; `body` holds the response body.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    body: &mut Vec<u8>,
) -> Result<(u16, bool), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("send publish: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let (head, head_len) = loop {
        let n = read_more(stream, &mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parse_response_head(&buf)? {
            break parsed;
        }
    };
    body.clear();
    let mut rest = buf.split_off(head_len);
    if head.chunked {
        let mut decoder = ChunkedDecoder::default();
        loop {
            decoder.decode(&rest, body)?;
            if decoder.is_done() {
                break;
            }
            let n = read_more(stream, &mut chunk).await?;
            rest.clear();
            rest.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(length) = head.content_length {
        while rest.len() < length {
            let n = read_more(stream, &mut chunk).await?;
            rest.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&rest[..length]);
    } else {
        // No framing: the body runs to the end of the connection.
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        body.extend_from_slice(&rest);
        return Ok((head.status, true));
    }
    Ok((head.status, head.close))
}

async fn read_more(stream: &mut TcpStream, chunk: &mut [u8]) -> Result<usize, String> {
    match stream.read(chunk).await {
        Ok(0) => Err("connection closed mid-response".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("read publish response: {e}")),
    }
}
