//! The HTTP server loop. Every request goes through the same axum [`Router`]; what
//! this module owns is the transport:
//!
//! - a connection from a client address that already has
//!   `max_connections_per_address` open is answered 429 at once and closed;
//! - the request head is read with a deadline and a size cap (slow or oversized
//!   heads are closed or answered 431 before any handler runs);
//! - a subscribe (`GET /channel/...`) is answered, and its event stream written,
//!   straight on the socket (see `subscriber`);
//! - a run of plain publishes (`POST /channel/{channel}`, one JSON event each) on a
//!   keep-alive connection is answered on the socket too (see `publisher`);
//! - every other request is served by hyper, with the bytes already read replayed,
//!   and hyper keeps the connection from there on.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::serve::Listener;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use super::answer::write_plain;
use super::publisher::{self, After};
use super::{subscriber, AppState, HttpSettings};
use crate::log::RateLimited;
use crate::metrics::Metrics;
use crate::refusal::ErrorKind;
use crate::transport::{PeerIp, RemoteIp, TrySend};

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

/// Serves `app` on `listener` (and subscribes with `state`, the state `app` was
/// built with: see `subscriber`) until `stop` turns true, then stops accepting and
/// waits (at most `drain`) for open connections to finish. Open event streams end
/// on `stop` by themselves. Of `settings` it reads the bounds on connections and
/// request heads.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    state: AppState,
    settings: Arc<HttpSettings>,
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
        let (routes, stop) = ((app.clone(), state.clone()), stop.clone());
        let settings = settings.clone();
        let held = Held {
            _open: guard,
            _place: place,
            peer: addr.peer_ip(),
        };
        tokio::spawn(connection(
            io,
            routes,
            settings,
            metrics.clone(),
            stop,
            held,
        ));
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
    (app, state): (Router, AppState),
    settings: Arc<HttpSettings>,
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
    if let Some(request) = subscriber::subscribe_request(&buf[..head_len]) {
        // The head buffer is not needed for the life of the stream.
        drop(buf);
        return subscriber::serve(io, request, state, held).await;
    }
    let mut stop = stop;
    let mut head_len = head_len;
    let max_body_bytes = state.settings.max_body_bytes;
    while let Some(request) = publisher::publish_request(&buf[..head_len], max_body_bytes) {
        match publisher::serve(&mut io, &mut buf, head_len, request, &state, &stop).await {
            After::Next => {}
            After::Close => return,
            After::Router => break,
        }
        // As hyper does between requests: the next head within the head deadline
        // (counted from the end of the last answer); an idle connection closes
        // when that passes or the server stops.
        let next = tokio::time::timeout(
            settings.header_read_timeout,
            read_head(&mut io, &mut buf, settings.max_header_bytes),
        );
        head_len = tokio::select! {
            next = next => match next {
                Ok(Ok(len)) => len,
                // hyper answers an oversized head as it would have before.
                Ok(Err(HeadError::TooLarge)) => break,
                _ => return,
            },
            _ = stopped(&mut stop) => return,
        };
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

async fn serve_hyper<Io>(
    io: Rewind<Io>,
    app: Router,
    peer: Option<IpAddr>,
    settings: Arc<HttpSettings>,
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
}
