//! A subscriber's connection, from its request head to its last byte.
//!
//! A subscribe (`GET /channel/{channel}` or `/channel/{channel}/client/{client}`)
//! is answered, and its event stream written, straight on the socket rather than
//! through a hyper connection and a streaming body. Why:
//!
//! - An idle subscriber then costs its socket and its stream state, not a general
//!   HTTP connection's read and write buffers (16 KiB in hyper) and a body channel.
//! - An append can write an event to a parked subscriber's socket itself
//!   ([`socket::SharedIo`] is the broker's [`Sink`](crate::broker::Sink)) instead of
//!   waking the subscriber's task to do it: one write per subscriber per event, no
//!   wake. With a hyper body every event is a wake, a poll of the body and a copy
//!   through hyper's buffer.
//! - Nothing else is read from such a connection, so there is nothing for hyper
//!   to do: the stream is close-delimited (no chunk framing on every event).
//!
//! The way through, in the order a subscriber meets it:
//!
//! 1. The server loop (`server.rs`) reads the request head within its deadline and
//!    size, and hands it to [`subscribe_request`], which keeps only the two
//!    subscribe shapes (anything else, malformed path segments included, goes to
//!    hyper and the router).
//! 2. [`serve`] calls the subscribe itself ([`super::subscribe::open`]: the same
//!    code the router's handlers call), with the checks the router's layers make
//!    on every route: the connection limit, authorization, the error count, CORS
//!    and the security headers.
//! 3. It writes the response head and the stream's first chunk in one write, then
//!    [`socket::pump`] writes the stream until either end closes, sharing the
//!    socket with the publishers' direct writes.
//!
//! [`stream::EventStream`] is the stream as chunks of bytes, the same for this
//! path and for a hyper body (the router still answers a subscribe that reaches
//! it, as in tests that drive the router without a socket).

mod socket;
mod stream;

pub(super) use stream::{EventStream, Source};

use axum::body::Body;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode, Uri, Version};
use axum::response::IntoResponse;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::answer::{layered as answer, response_head, write_plain};
use super::auth::SubscribeAccess;
use super::subscribe::{last_event_id, open, stream_response};
use super::{ApiError, AppState};
use crate::transport::TrySend;

/// The kernel send buffer a subscriber's socket may use (Linux allocates twice
/// this, for its own bookkeeping). The broker keeps a subscriber's backlog itself
/// (`--subscriber.buffer` events) and writes at most a 64 KiB batch at a time, so a
/// bigger kernel buffer only lets a client that stops reading pin more memory.
const SUBSCRIBER_SEND_BUFFER: usize = 64 * 1024;

/// A subscribe's request: its head, and which route it names.
pub(super) struct SubscribeHead {
    parts: Parts,
    route: Route,
}

/// The two subscribe routes, with their path segments as sent (percent-encoded).
enum Route {
    Channel(String),
    Client(String, String),
}

/// The request, if the head is a subscribe in one of the two shapes this module
/// answers; `Err` if it is one but its head is malformed. `None` leaves the
/// request to hyper and the router.
pub(super) fn subscribe_request(head: &[u8]) -> Option<Result<SubscribeHead, StatusCode>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // Let hyper answer what it makes of anything else.
        _ => return None,
    }
    if parsed.method != Some("GET") {
        return None;
    }
    let target = parsed.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let segments: Vec<&str> = path.strip_prefix("/channel/")?.split('/').collect();
    let route = match segments[..] {
        [channel] if !channel.is_empty() => Route::Channel(channel.to_owned()),
        [channel, "client", client] => Route::Client(channel.to_owned(), client.to_owned()),
        _ => return None,
    };
    let build = || -> Result<Parts, StatusCode> {
        let uri: Uri = target.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .version(version);
        for h in parsed.headers.iter() {
            request = request.header(h.name, h.value);
        }
        let request = request.body(()).map_err(|_| StatusCode::BAD_REQUEST)?;
        Ok(request.into_parts().0)
    };
    Some(build().map(|parts| SubscribeHead { parts, route }))
}

/// Answers a subscribe read by [`subscribe_request`]: its event stream, written by
/// a task of its own that keeps `held` (the connection's place in the server's
/// counts) until the stream ends, or its error answer.
pub(super) async fn serve<Io>(
    mut io: Io,
    request: Result<SubscribeHead, StatusCode>,
    state: AppState,
    held: impl Send + 'static,
) where
    Io: AsyncRead + AsyncWrite + TrySend + Unpin + Send + 'static,
{
    let request = match request {
        Ok(request) => request,
        Err(status) => {
            let _ = write_plain(&mut io, status, "malformed request").await;
            return;
        }
    };
    match subscribe(&state, request).await {
        Ok(mut stream) => {
            // Close-delimited: the stream ends when the connection does, with no
            // chunk framing on every event.
            let response = answer(&state, stream_response(Body::empty()));
            let mut first = response_head(response.status(), response.headers(), None);
            first.extend_from_slice(&stream.take_first().unwrap_or_default());
            io.limit_send_buffer(SUBSCRIBER_SEND_BUFFER);
            tokio::spawn(socket::pump(io, Bytes::from(first), stream, held));
        }
        Err(error) => {
            let (parts, body) = answer(&state, error.into_response()).into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut whole = response_head(parts.status, &parts.headers, Some(body.len()));
            whole.extend_from_slice(&body);
            let _ = io.write_all(&whole).await;
            let _ = io.shutdown().await;
        }
    }
}

/// The subscribe, with what the router checks before its handlers: the
/// connection limit, then the request's access, then the route's own checks.
async fn subscribe(state: &AppState, request: SubscribeHead) -> Result<EventStream, ApiError> {
    let SubscribeHead { mut parts, route } = request;
    if let Some(refusal) = super::over_connection_limit(state) {
        return Err(refusal);
    }
    let access = SubscribeAccess::from_request_parts(&mut parts, state).await?;
    let last_event_id = last_event_id(&parts.headers, Query::try_from_uri(&parts.uri).ok());
    let last_event_id = last_event_id.as_deref();
    match route {
        Route::Channel(channel) => open(state, access, &decode(&channel)?, None, last_event_id),
        Route::Client(channel, client) => {
            let (channel, client) = (decode(&channel)?, decode(&client)?);
            open(state, access, &channel, Some(&client), last_event_id)
        }
    }
}

/// A path segment, percent-decoded as the router's `Path` decodes it.
fn decode(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ApiError::bad_request("the path is not valid UTF-8 once percent-decoded"))
}
