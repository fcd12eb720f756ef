//! The HTTP server loop. Every request goes through the same axum [`Router`]; what
//! this module owns is the transport:
//!
//! - a connection from a client address that already has
//!   `max_connections_per_address` open is answered 429 at once and closed;
//! - the request head is read with a deadline and a size cap (slow or oversized
//!   heads are closed or answered 431 before any handler runs);
//! - a subscribe (`GET /channel/...`) is answered, and its event stream written,
//!   straight on the socket: an idle subscriber then costs its socket and its stream
//!   state, not a general HTTP connection's read and write buffers (16 KiB in hyper);
//! - every other request is served by hyper, with the bytes already read replayed.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri, Version};
use axum::serve::Listener;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use super::subscribe::{DirectStream, EventStream, WantDirect};
use crate::log::RateLimited;
use crate::metrics::{ErrorKind, Metrics};
use crate::transport::{PeerIp, RemoteIp, TrySend};

/// Bounds on request heads.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// A client must send its whole request head within this time.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Open connections from one client IP address; more are answered 429.
    pub max_connections_per_address: usize,
}

/// Open connections, so shutdown can wait for them to finish.
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    idle: Notify,
}

struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Relaxed) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What an open connection holds for as long as it is open: its place in the
/// shutdown count and in its address's count. Moves with an event stream into the
/// task that writes it.
/// The kernel send buffer a subscriber's socket may use (Linux allocates twice
/// this, for its own bookkeeping). The broker keeps a subscriber's backlog itself
/// (`--subscriber.buffer` events) and writes at most a 64 KiB batch at a time, so a
/// bigger kernel buffer only lets a client that stops reading pin more memory.
const SUBSCRIBER_SEND_BUFFER: usize = 64 * 1024;

struct Held {
    _open: TrackGuard,
    _place: Option<AddressGuard>,
    /// The client's address, for the routes that ask for it ([`RemoteIp`]).
    peer: Option<IpAddr>,
}

/// Open connections per client address. An address has an entry only while it has
/// a connection open, so the map is as large as the set of connected clients.
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection of an address; gives its place back when dropped.
struct AddressGuard {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A place for one more connection from `ip`, or `None` at the limit.
    fn admit(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressGuard> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= table.limit {
            return None;
        }
        *count += 1;
        Some(AddressGuard {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Warns about a per-address refusal, at most once per ten seconds: a client
/// hammering the limit must not flood the log.
fn log_refused(log: &RateLimited, ip: IpAddr, limit: usize) {
    if let Some(unlogged) = log.allow() {
        tracing::warn!(
            address = %ip,
            limit,
            refused_unlogged = unlogged,
            "refusing connections over --http.server.maxConnectionsPerAddress (429); behind a proxy, raise it to --http.server.maxConnections"
        );
    }
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting and
/// waits (at most `drain`) for open connections to finish. Open event streams end
/// on `stop` by themselves.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    settings: ServeSettings,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) where
    L: Listener,
    L::Io: TrySend,
    L::Addr: PeerIp,
{
    // Every answer of the router (the relay's, merged into it, included) carries the
    // security headers; so do the ones this module writes itself (`write_plain`).
    let app = app.layer(axum::middleware::map_response(super::headers::layer));
    let tracker = Arc::new(Tracker::default());
    let per_address = Arc::new(PerAddress {
        limit: settings.max_connections_per_address,
        open: Mutex::new(HashMap::new()),
    });
    let refusals = RateLimited::default();
    loop {
        let (io, addr) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        tracker.open.fetch_add(1, Relaxed);
        let guard = TrackGuard(tracker.clone());
        let place = match addr.peer_ip() {
            None => None,
            Some(ip) => match PerAddress::admit(&per_address, ip) {
                Some(place) => Some(place),
                None => {
                    // Counted as refused both per address and among refused
                    // requests, so dashboards of either see it.
                    metrics
                        .connections_refused_per_address
                        .fetch_add(1, Relaxed);
                    metrics.request_error(ErrorKind::TooManyConnectionsFromAddress);
                    log_refused(&refusals, ip, per_address.limit);
                    let limit = per_address.limit;
                    tokio::spawn(async move {
                        refuse(io, limit).await;
                        drop(guard);
                    });
                    continue;
                }
            },
        };
        let (app, stop) = (app.clone(), stop.clone());
        let held = Held {
            _open: guard,
            _place: place,
            peer: addr.peer_ip(),
        };
        tokio::spawn(connection(io, app, settings, metrics.clone(), stop, held));
    }
    drop(listener);
    let drained = async {
        loop {
            let idle = tracker.idle.notified();
            if tracker.open.load(Relaxed) == 0 {
                return;
            }
            idle.await;
        }
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            open = tracker.open.load(Relaxed),
            "connections still open after the drain period"
        );
    }
}

/// Answers a connection over its address's limit with 429 and closes it, without
/// reading its request. The answer waits (briefly) for the client's first bytes: an
/// HTTP client that gets a response before it has sent its request takes it for a
/// protocol error rather than a 429.
async fn refuse<Io: AsyncRead + AsyncWrite + Unpin>(mut io: Io, limit: usize) {
    let mut first = [0u8; 512];
    if let Ok(Ok(0) | Err(_)) =
        tokio::time::timeout(Duration::from_secs(1), io.read(&mut first)).await
    {
        return;
    }
    let message = format!(
        "too many connections from your address (limit {limit}); close some or retry later"
    );
    let status = ErrorKind::TooManyConnectionsFromAddress.status();
    let _ = write_plain(&mut io, status, &message).await;
}

/// Counts a refused request head (431, 408) and answers it.
async fn refuse_head<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io,
    metrics: &Metrics,
    kind: ErrorKind,
    message: &str,
) {
    metrics.request_error(kind);
    let _ = write_plain(io, kind.status(), message).await;
}

/// Why reading a request head failed.
enum HeadError {
    Closed,
    TooLarge,
    TimedOut,
    Io,
}

/// Reads until the end of the request head; returns the head's length in `buf`.
async fn read_head<Io: AsyncRead + Unpin>(
    io: &mut Io,
    buf: &mut BytesMut,
    max: usize,
) -> Result<usize, HeadError> {
    let mut searched: usize = 0;
    loop {
        if let Some(pos) = buf[searched.saturating_sub(3)..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            return Ok(searched.saturating_sub(3) + pos + 4);
        }
        searched = buf.len();
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
        buf.reserve((max - buf.len()).min(1024));
        match io.read_buf(buf).await {
            Ok(0) => return Err(HeadError::Closed),
            Ok(_) => {}
            Err(_) => return Err(HeadError::Io),
        }
    }
}

async fn connection<Io>(
    mut io: Io,
    app: Router,
    settings: ServeSettings,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    held: Held,
) where
    Io: AsyncRead + AsyncWrite + TrySend + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(
        settings.header_read_timeout,
        read_head(&mut io, &mut buf, settings.max_header_bytes),
    )
    .await
    .unwrap_or(Err(HeadError::TimedOut));
    let head_len = match head {
        Ok(len) => len,
        Err(HeadError::TooLarge) => {
            let message = "request head too large";
            return refuse_head(&mut io, &metrics, ErrorKind::HeaderTooLarge, message).await;
        }
        Err(HeadError::TimedOut) => {
            let message = "request head not received in time";
            return refuse_head(&mut io, &metrics, ErrorKind::HeaderTimeout, message).await;
        }
        Err(HeadError::Closed | HeadError::Io) => return,
    };
    if let Some(request) = subscribe_request(&buf[..head_len]) {
        // The head buffer is not needed for the life of the stream.
        drop(buf);
        match request {
            // Boxed: routing needs a large future for a moment, and its answer
            // is written by a task of its own (see `pump`).
            Ok(request) => match Box::pin(route_subscribe(app, request)).await {
                Routed::Stream(first, stream) => {
                    io.limit_send_buffer(SUBSCRIBER_SEND_BUFFER);
                    tokio::spawn(pump(io, first, stream, held));
                }
                Routed::Whole(answer) => {
                    let _ = io.write_all(&answer).await;
                    let _ = io.shutdown().await;
                }
            },
            Err(status) => {
                let _ = write_plain(&mut io, status, "malformed request").await;
            }
        }
        return;
    }
    // Boxed: this task's future is sized for its largest branch, and a subscriber's
    // should not carry room for a whole hyper connection.
    let prefix = buf.freeze();
    let peer = held.peer;
    Box::pin(serve_hyper(
        Rewind { prefix, io },
        app,
        peer,
        settings,
        stop,
    ))
    .await;
}

/// The request, if the head is a `GET /channel/...` (a subscribe); `Err` if it is one
/// but malformed.
fn subscribe_request(head: &[u8]) -> Option<Result<Request<Body>, StatusCode>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // Let hyper answer what it makes of anything else.
        _ => return None,
    }
    if parsed.method != Some("GET") || !parsed.path.is_some_and(|p| p.starts_with("/channel/")) {
        return None;
    }
    let build =
        || -> Result<Request<Body>, StatusCode> {
            let uri: Uri = parsed
                .path
                .unwrap_or("/")
                .parse()
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            let mut request = Request::builder().method(Method::GET).uri(uri).version(
                if parsed.version == Some(0) {
                    Version::HTTP_10
                } else {
                    Version::HTTP_11
                },
            );
            for h in parsed.headers.iter() {
                request = request.header(h.name, h.value);
            }
            request
                .body(Body::empty())
                .map_err(|_| StatusCode::BAD_REQUEST)
        };
    Some(build())
}

/// What the router made of a subscribe.
enum Routed {
    /// An event stream, and the bytes to send first: the response head and the
    /// stream's first chunk, in one write.
    Stream(Bytes, EventStream),
    /// Any other answer (an error): head and body.
    Whole(Vec<u8>),
}

/// Runs a subscribe through the router.
async fn route_subscribe(app: Router, mut request: Request<Body>) -> Routed {
    request.extensions_mut().insert(WantDirect);
    let Ok(mut response) = app.oneshot(request).await;
    let stream = response
        .extensions_mut()
        .remove::<DirectStream>()
        .and_then(|direct| direct.take());
    let (parts, body) = response.into_parts();
    match stream {
        Some(mut stream) => {
            // Close-delimited: the stream ends when the connection does, with no
            // chunk framing on every event.
            let mut first = response_head(parts.status, &parts.headers, None);
            first.extend_from_slice(&stream.take_first().unwrap_or_default());
            Routed::Stream(Bytes::from(first), stream)
        }
        None => {
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut answer = response_head(parts.status, &parts.headers, Some(body.len()));
            answer.extend_from_slice(&body);
            Routed::Whole(answer)
        }
    }
}

/// Writes a subscriber's event stream on its socket until either ends. The socket is
/// shared with publishers: while the stream waits with nothing to write, an append
/// may write its event to the socket directly (see [`SharedIo`]), which spares a
/// task wake per subscriber per event.
async fn pump<Io>(io: Io, first: Bytes, mut stream: EventStream, _held: Held)
where
    Io: AsyncRead + AsyncWrite + TrySend + Unpin + Send + 'static,
{
    let io = Arc::new(SharedIo(Mutex::new(io)));
    stream.attach(io.clone());
    let mut pending = Some(first);
    let mut probe = [0u8; 16];
    std::future::poll_fn(|cx| {
        let mut io = io.lock();
        loop {
            // The client closing its side ends the subscription; anything it sends
            // on a stream connection is ignored.
            let mut read = ReadBuf::new(&mut probe);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Pending => {}
            }
            if let Some(buf) = &mut pending {
                match Pin::new(&mut *io).poll_write(cx, buf) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => buf.advance(n),
                    Poll::Pending => return Poll::Pending,
                }
                if !buf.is_empty() {
                    continue;
                }
                pending = None;
            }
            match stream.poll_chunk(cx) {
                Poll::Ready(Some(chunk)) => pending = Some(chunk),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    // Unsubscribes, so no publisher writes to the socket any more.
    drop(stream);
    let _ = std::future::poll_fn(|cx| Pin::new(&mut *io.lock()).poll_shutdown(cx)).await;
}

/// A subscriber's socket, shared by its stream's task and the publishers that write
/// to it directly ([`crate::broker::Sink`]). The stream's rules keep the two from
/// ever interleaving; the mutex only makes the sharing sound, and is uncontended
/// but for a moment.
///
/// Aligned to a cache line: a direct write touches the mutex and the socket's
/// descriptor right behind it, one line that [`crate::broker::Sink::warm`] can
/// fetch ahead of the write.
#[repr(align(64))]
struct SharedIo<Io>(Mutex<Io>);

impl<Io> SharedIo<Io> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Io> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<Io: AsyncWrite + TrySend + Unpin + Send> crate::broker::Sink for SharedIo<Io> {
    fn warm(&self) {
        // A plain load from the mutex's line: no lock, and nothing is done with it.
        std::hint::black_box(self.0.is_poisoned());
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut io = self.lock();
        // A kernel socket: one non-blocking send.
        if let Some(result) = io.try_send(buf) {
            return result;
        }
        // Otherwise a write polled with a waker that does nothing: readiness-based
        // sockets (turmoil's) write what fits or say `Pending`, which is all a
        // non-blocking write is. The stream's task registers its own waker again
        // when it next writes.
        //
        // Unconstrained: these writes are made by whichever task appended (a
        // publisher's, a relay's), many per poll, and are not its own I/O. Counted
        // against its cooperative budget, every write past the 128th of one poll
        // would say `Pending` with room in the socket, and go the slow way through
        // the subscriber's task.
        let mut write = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            Pin::new(&mut *io).poll_write(cx, buf)
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(Pin::new(&mut write), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

fn response_head(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(len) = content_length {
        head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Answers a refused request head and closes. Closing a socket with unread input
/// makes the kernel reset the connection, which can destroy the answer before the
/// client reads it; so, after answering, the rest of its input is read and dropped
/// for a moment (a "lingering close", bounded in time and bytes).
async fn write_plain<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io,
    status: StatusCode,
    message: &str,
) -> io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::headers::secure(&mut headers);
    io.write_all(&response_head(status, &headers, Some(body.len())))
        .await?;
    io.write_all(body.as_bytes()).await?;
    io.shutdown().await?;
    // On the heap: an array here would enlarge every connection's task.
    let mut sink = vec![0u8; 4096];
    let mut drained = 0usize;
    let linger = async {
        while drained < 1 << 20 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
    Ok(())
}

async fn serve_hyper<Io>(
    io: Rewind<Io>,
    app: Router,
    peer: Option<IpAddr>,
    settings: ServeSettings,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.map_request(move |mut request: Request<hyper::body::Incoming>| {
        if let Some(ip) = peer {
            request.extensions_mut().insert(RemoteIp(ip));
        }
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// An IO whose first reads return bytes already read from it.
struct Rewind<Io> {
    prefix: Bytes,
    io: Io,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Rewind<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Rewind<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Completes once `stop` is true (without holding the watch's lock).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct write locks a subscriber's connection and reads the socket's
    /// descriptor: the lock and the whole tokio socket must lie in the first cache
    /// line of `SharedIo` (the one `Sink::warm` fetches). A field put before the
    /// stream in `Conn`, or a much larger tokio `TcpStream`, would split them.
    #[tokio::test]
    async fn the_lock_and_the_socket_of_a_shared_connection_share_a_cache_line() {
        use crate::transport::{Conn, Guarded};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut guarded = Guarded::new(listener, Arc::default(), Duration::from_secs(1));
        let (conn, _) = axum::serve::Listener::accept(&mut guarded).await;
        let shared = SharedIo(Mutex::new(conn));
        assert_eq!(std::mem::align_of_val(&shared), 64);
        let start = &shared as *const SharedIo<_> as usize;
        let guard = shared.lock();
        // The mutex's lock word first, then the connection, its stream first.
        let conn_at = &*guard as *const Conn<_> as usize - start;
        let stream_at = guard.get_ref() as *const tokio::net::TcpStream as usize - start;
        let end = stream_at + std::mem::size_of::<tokio::net::TcpStream>();
        assert!(
            conn_at > 0 && stream_at == conn_at && end <= 64,
            "lock word at 0, connection at {conn_at}, socket at {stream_at}..{end}"
        );
    }

    #[test]
    fn an_address_keeps_an_entry_only_while_it_has_connections_open() {
        let table = Arc::new(PerAddress {
            limit: 2,
            open: Mutex::new(HashMap::new()),
        });
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = PerAddress::admit(&table, a).expect("first");
        let second = PerAddress::admit(&table, a).expect("second");
        assert!(PerAddress::admit(&table, a).is_none(), "over the limit");
        let other = PerAddress::admit(&table, b).expect("another address");
        drop(first);
        let third = PerAddress::admit(&table, a).expect("room after a close");
        drop((second, third, other));
        assert!(table.open.lock().unwrap().is_empty(), "entries leaked");
    }

    /// One append writes to every parked subscriber within a single poll of the
    /// appending task: none of those writes may be refused for the task's
    /// cooperative budget (128 operations a poll) while its socket has room.
    /// Polled writes are the ones the budget could refuse.
    #[tokio::test]
    async fn direct_writes_in_one_poll_are_not_refused_for_the_tasks_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sinks = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..300 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            sinks.push(SharedIo(Mutex::new(crate::transport::Polled(server))));
            readers.push(client);
        }
        // No await from here on: all of it runs in one poll of this task, as an
        // append's writes do.
        let frame = b"data: x\n\n";
        let refused = sinks
            .iter()
            .filter(|sink| !matches!(crate::broker::Sink::try_write(*sink, frame), Ok(n) if n == frame.len()))
            .count();
        assert_eq!(refused, 0, "direct writes refused with room in the socket");
        for mut reader in readers {
            let mut got = vec![0u8; frame.len()];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..], &frame[..]);
        }
    }

    /// A direct write asks the kernel itself, behind the runtime's back: once it
    /// has filled the socket, it must say `WouldBlock` (never a partial frame
    /// without saying how much), and the stream's task, writing next, must still
    /// be woken when the client reads and room returns.
    #[tokio::test]
    async fn a_direct_write_that_fills_the_socket_leaves_the_task_able_to_wait_for_room() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sink = Arc::new(SharedIo(Mutex::new(server)));
        let frame = vec![b'x'; 4096];
        let mut sent = 0usize;
        let mut direct = 0;
        loop {
            match crate::broker::Sink::try_write(&*sink, &frame) {
                Ok(n) => {
                    assert!(n > 0 && n <= frame.len(), "wrote {n} of {}", frame.len());
                    sent += n;
                    direct += 1;
                }
                Err(error) => {
                    assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
                    break;
                }
            }
            assert!(direct < 100_000, "the socket never filled");
        }
        assert!(direct > 1, "filled at the first write");
        // The task's turn: its write finds no room, waits, and is woken by the
        // client's reads.
        let task = {
            let sink = sink.clone();
            tokio::spawn(async move {
                std::future::poll_fn(|cx| Pin::new(&mut *sink.lock()).poll_write(cx, b"tail")).await
            })
        };
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < sent + 4 {
            let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("the task's write never went out")
                .unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(task.await.unwrap().unwrap(), 4);
        assert!(got[..sent].iter().all(|&b| b == b'x'));
        assert_eq!(&got[sent..], b"tail");
    }
}
