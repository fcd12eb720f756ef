//! The subscriber's direct path: a subscribe (`GET /channel/...`) is answered, and
//! its event stream written, straight on the socket rather than through a hyper
//! connection.
//!
//! Why: an idle subscriber then costs its socket and its stream state, not a general
//! HTTP connection's read and write buffers (16 KiB in hyper), and an append can
//! write an event to a parked subscriber's socket itself ([`SharedIo`], the
//! broker's [`Sink`](crate::broker::Sink)) instead of waking its task: one write per
//! subscriber per event, no wake. The request still goes through the one router
//! (authorization, validation and error answers stay there); the subscribe handler
//! hands its [`EventStream`] back here in a response extension ([`DirectStream`]).
//!
//! The parts, in the order a subscriber meets them: [`subscribe_request`] reads the
//! head the server already read, [`serve`] routes it and writes the answer,
//! `pump` writes the stream until either end closes. The server loop (`server.rs`)
//! owns the connection until then: limits, the head's deadline and size.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri, Version};
use axum::Router;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower::ServiceExt;

use super::subscribe::{DirectStream, EventStream, WantDirect};
use crate::transport::TrySend;

/// The kernel send buffer a subscriber's socket may use (Linux allocates twice
/// this, for its own bookkeeping). The broker keeps a subscriber's backlog itself
/// (`--subscriber.buffer` events) and writes at most a 64 KiB batch at a time, so a
/// bigger kernel buffer only lets a client that stops reading pin more memory.
const SUBSCRIBER_SEND_BUFFER: usize = 64 * 1024;

/// Answers a subscribe read by [`subscribe_request`]: its event stream, written by a
/// task of its own that keeps `held` (the connection's place in the server's counts)
/// until the stream ends, or its error answer.
pub(super) async fn serve<Io>(
    mut io: Io,
    request: Result<Request<Body>, StatusCode>,
    app: Router,
    held: impl Send + 'static,
) where
    Io: AsyncRead + AsyncWrite + TrySend + Unpin + Send + 'static,
{
    match request {
        // Boxed: routing needs a large future for a moment, and its answer is
        // written by a task of its own (see `pump`).
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
}

/// The request, if the head is a `GET /channel/...` (a subscribe); `Err` if it is one
/// but malformed.
pub(super) fn subscribe_request(head: &[u8]) -> Option<Result<Request<Body>, StatusCode>> {
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
async fn pump<Io>(io: Io, first: Bytes, mut stream: EventStream, _held: impl Send)
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
pub(super) async fn write_plain<Io: AsyncRead + AsyncWrite + Unpin>(
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
