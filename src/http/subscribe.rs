//! Subscribe routes: the `text/event-stream` response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::BytesMut;
use futures_util::Stream;
use serde::Deserialize;
use tokio::time::{sleep_until, Instant, Sleep};

use super::auth::SubscribeAccess;
use super::{ApiError, AppState};
use crate::broker::{
    pattern_prefix, wrap_data, ManySubscribeError, MultiSubscription, Next, Resume, Sink,
    SubscribeError, Subscription,
};
use crate::event::{encode_event, encode_retry, validate_name, Cursor};
use crate::refusal::ErrorKind;

#[derive(Debug, Deserialize)]
pub(super) struct SubscribeQuery {
    /// For clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

pub(super) async fn subscribe(
    State(state): State<AppState>,
    access: SubscribeAccess,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    direct: Option<Extension<WantDirect>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    open(state, access, &channel, None, query, direct, &headers)
}

pub(super) async fn subscribe_client(
    State(state): State<AppState>,
    access: SubscribeAccess,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    direct: Option<Extension<WantDirect>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((channel, client)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_name("client", &client).map_err(|e| ApiError::bad_request(e.0))?;
    open(
        state,
        access,
        &channel,
        Some(&client),
        query,
        direct,
        &headers,
    )
}

fn open(
    state: AppState,
    access: SubscribeAccess,
    channel: &str,
    client: Option<&str>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    direct: Option<Extension<WantDirect>>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let set = channel_set(channel, state.settings.max_channels_per_stream)?;
    for channel in &set {
        access.access.subscribe(channel, client)?;
    }
    // The header wins over the query parameter: browsers send the header on their
    // own reconnects, while the query keeps the id the page was first opened with.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| query.ok().and_then(|Query(q)| q.last_event_id));
    let last_event_id = last_event_id.as_deref().filter(|id| !id.is_empty());
    let source = match &set[..] {
        // A pattern is always wrapped: its events come from several channels.
        [name] if pattern_prefix(name).is_none() => {
            Source::One(subscribe_one(&state, channel, client, last_event_id)?)
        }
        _ => Source::Many(Box::new(subscribe_many(
            &state,
            &set,
            client,
            last_event_id,
        )?)),
    };
    let stream = EventStream::new(source, &state.settings, access.deadline);
    let mut response = match direct {
        // The server writes the stream on the socket itself.
        Some(_) => {
            let mut response = Response::new(Body::empty());
            response
                .extensions_mut()
                .insert(DirectStream(Arc::new(Mutex::new(Some(stream)))));
            response
        }
        None => Response::new(Body::from_stream(stream)),
    };
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The channels of a subscribe path: one name, or several joined with `,` (a
/// comma cannot appear in a name), distinct and at most `max` of them. A name may
/// be a pattern (`orders.*`); no name of the set may be one a pattern of it covers.
fn channel_set(path: &str, max: usize) -> Result<Vec<&str>, ApiError> {
    let bad = |message: String| Err(ApiError::bad_request(message));
    if !path.contains(',') {
        validate_channel_or_pattern(path)?;
        return Ok(vec![path]);
    }
    let count = path.split(',').count();
    if count > max {
        return bad(format!(
            "a stream may follow at most {max} channels (--subscriber.maxChannels), got {count}"
        ));
    }
    let mut set: Vec<&str> = Vec::with_capacity(count);
    for name in path.split(',') {
        if name.is_empty() {
            return bad(
                "empty channel name in the list: name channels between the commas, \
                 as in /channel/news,sport"
                    .into(),
            );
        }
        validate_channel_or_pattern(name)?;
        if set.contains(&name) {
            return bad(format!("channel {name:?} appears twice in the list"));
        }
        set.push(name);
    }
    for pattern in &set {
        let Some(prefix) = pattern_prefix(pattern) else {
            continue;
        };
        if let Some(covered) = set
            .iter()
            .find(|name| *name != pattern && name.starts_with(prefix))
        {
            return bad(format!(
                "{covered:?} is already covered by the pattern {pattern:?} in the list: \
                 its events would arrive twice"
            ));
        }
    }
    Ok(set)
}

/// A channel name, or a pattern: a name prefix ending in `.` or `:`, then `*`.
fn validate_channel_or_pattern(name: &str) -> Result<(), ApiError> {
    let bad = |message: String| Err(ApiError::bad_request(message));
    let Some(star) = name.find('*') else {
        return validate_name("channel", name).map_err(|e| ApiError::bad_request(e.0));
    };
    let Some(prefix) = pattern_prefix(name).filter(|_| star + 1 == name.len()) else {
        return bad(format!(
            "{name:?} is not a channel pattern: `*` may only end a name, right after \
             a `.` or `:`, as in orders.* or user:42:*"
        ));
    };
    validate_name("channel pattern", prefix).map_err(|e| ApiError::bad_request(e.0))
}

/// `GET /channel/`: no channel named.
pub(super) async fn subscribe_none() -> ApiError {
    ApiError::bad_request(
        "no channel named: subscribe to /channel/{channel}, to several as /channel/{a},{b}, \
         or to a pattern as /channel/{prefix}.*",
    )
}

fn client_taken(client: Option<&str>, channel: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        format!(
            "client id {:?} is already subscribed to channel {channel:?}",
            client.unwrap_or("")
        ),
    )
}

fn subscribe_one(
    state: &AppState,
    channel: &str,
    client: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Subscription, ApiError> {
    let cursor = last_event_id.map(Cursor::parse);
    let resume = match &cursor {
        None => Resume::Live,
        Some(Ok(cursor)) => Resume::From(cursor),
        // An id this broker did not issue: say so, then carry on live.
        Some(Err(_)) => Resume::Unknown,
    };
    state
        .broker
        .subscribe(channel, client, resume)
        .map_err(|error| match error {
            SubscribeError::ClientTaken => client_taken(client, channel),
            SubscribeError::ChannelsFull(full) => full.into(),
        })
}

fn subscribe_many(
    state: &AppState,
    channels: &[&str],
    client: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<MultiSubscription, ApiError> {
    state
        .broker
        .subscribe_many(channels, client, last_event_id)
        .map_err(|ManySubscribeError { channel, error }| match error {
            SubscribeError::ClientTaken => client_taken(client, &channel),
            SubscribeError::ChannelsFull(full) => full.into(),
        })
}

/// Marks a request the server answers on the socket itself (see `http::server`):
/// its event stream comes back in the response's [`DirectStream`] extension instead
/// of in the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WantDirect;

/// A subscriber's event stream handed to the server's own writer.
#[derive(Clone)]
pub(crate) struct DirectStream(pub(crate) Arc<Mutex<Option<EventStream>>>);

impl DirectStream {
    pub(crate) fn take(&self) -> Option<EventStream> {
        self.0.lock().ok()?.take()
    }
}

/// A subscriber's event stream: the first chunk (`retry:`, any reset and replayed
/// events, the cursor), then events as they come, keep-alive comments while idle
/// (both from [`Subscription::poll_next`]), and a last event when the subscriber
/// overflows or its token expires. Polled by hand rather than built from
/// combinators: it is woken once per event per subscriber, the hottest path there is.
pub(crate) struct EventStream {
    source: Source,
    /// The subscriber's token expires then: the stream ends with `event: expired`.
    expires: Option<Pin<Box<Sleep>>>,
    expired: bool,
    first: Option<Bytes>,
    done: bool,
}

/// What a stream reads: one channel, or several (see `broker::multi`).
enum Source {
    One(Subscription),
    /// Boxed: streams of one channel, the many, stay as small as before.
    Many(Box<MultiSubscription>),
}

impl EventStream {
    fn new(mut source: Source, settings: &super::HttpSettings, expires: Option<Instant>) -> Self {
        // The first chunk goes out at once: `retry:` (so `onopen` fires), then any
        // reset and replayed events, then the cursor.
        let mut first = BytesMut::from(&encode_retry(settings.retry.as_millis() as u64)[..]);
        let preamble = match &mut source {
            Source::One(subscription) => subscription.take_preamble(),
            Source::Many(subscription) => subscription.take_preamble(),
        };
        if let Some(preamble) = preamble {
            first.extend_from_slice(&preamble);
        }
        EventStream {
            source,
            expires: expires.map(|at| Box::pin(sleep_until(at))),
            expired: false,
            first: Some(first.freeze()),
            done: false,
        }
    }

    /// The first chunk, if not yet taken (to send it with the response head).
    pub(crate) fn take_first(&mut self) -> Option<Bytes> {
        self.first.take()
    }

    /// Lets publishers write events to `sink` directly while this stream waits (see
    /// [`Subscription::attach`]); the stream's writer must then write exactly the
    /// chunks this stream yields, and nothing else.
    pub(crate) fn attach(&mut self, sink: Arc<dyn Sink>) {
        // A stream of several channels frames its events itself: no direct writes.
        if let Source::One(subscription) = &mut self.source {
            subscription.attach(sink);
        }
    }

    fn end_with(&mut self, frame: Bytes) -> Poll<Option<Bytes>> {
        self.done = true;
        Poll::Ready(Some(frame))
    }

    /// The next chunk to write; `None` when the stream is over.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(expires) = &mut self.expires {
            self.expired = self.expired || expires.as_mut().poll(cx).is_ready();
        }
        if self.expired {
            // The last bytes are ours: take the socket back from publishers first.
            let carry = match &mut self.source {
                Source::One(subscription) => ready!(subscription.poll_release(cx)),
                Source::Many(_) => None,
            };
            let expired = encode_event(
                None,
                Some("expired"),
                None,
                r#"{"reason":"the token expired; reconnect with a new one"}"#,
            );
            return self.end_with(match carry {
                Some(carry) => [carry, expired].concat().into(),
                None => expired,
            });
        }
        let next = match &mut self.source {
            Source::One(subscription) => ready!(subscription.poll_next(cx)),
            Source::Many(subscription) => ready!(subscription.poll_next(cx)),
        };
        match next {
            Next::Data(bytes) => Poll::Ready(Some(bytes)),
            Next::Overflow { behind } => {
                let (channel, client) = match &self.source {
                    Source::One(s) => (Some(s.channel()), s.client_id()),
                    Source::Many(s) => (s.overflowed_channel(), s.client_id()),
                };
                tracing::info!(
                    channel,
                    client,
                    behind,
                    "disconnecting a subscriber that fell behind"
                );
                let mut data = format!(
                    r#"{{"reason":"subscriber fell behind its buffer; reconnect with Last-Event-ID","behind":{behind}}}"#
                );
                if let (Source::Many(_), Some(channel)) = (&self.source, channel) {
                    data = wrap_data(channel, &data);
                }
                self.end_with(encode_event(None, Some("overflow"), None, &data))
            }
            Next::Closed => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}
