//! Subscribe routes: the `text/event-stream` response.

use std::convert::Infallible;
use std::future::pending;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::BytesMut;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior, Sleep};

use super::auth::SubscribeAccess;
use super::{ApiError, AppState};
use crate::broker::{Next, Resume, SubscribeError, Subscription};
use crate::event::{encode_event, encode_retry, validate_name, Cursor, KEEP_ALIVE};
use crate::metrics::ErrorKind;

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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    open(state, access, &channel, None, query, &headers)
}

pub(super) async fn subscribe_client(
    State(state): State<AppState>,
    access: SubscribeAccess,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((channel, client)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_name("client", &client).map_err(|e| ApiError::bad_request(e.0))?;
    open(state, access, &channel, Some(&client), query, &headers)
}

fn open(
    state: AppState,
    access: SubscribeAccess,
    channel: &str,
    client: Option<&str>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    validate_name("channel", channel).map_err(|e| ApiError::bad_request(e.0))?;
    access.access.subscribe(channel)?;
    // The header wins over the query parameter: browsers send the header on their
    // own reconnects, while the query keeps the id the page was first opened with.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| query.ok().and_then(|Query(q)| q.last_event_id));
    let cursor = last_event_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .map(Cursor::parse);
    let resume = match &cursor {
        None => Resume::Live,
        Some(Ok(cursor)) => Resume::From(cursor),
        // An id this broker did not issue: say so, then carry on live.
        Some(Err(_)) => Resume::Unknown,
    };
    let subscription = state.broker.subscribe(channel, client, resume).map_err(
        |SubscribeError::ClientTaken| {
            ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "client id {:?} is already subscribed to channel {channel:?}",
                    client.unwrap_or("")
                ),
            )
        },
    )?;
    let body = Body::from_stream(event_stream(
        subscription,
        state.shutdown.clone(),
        &state.settings,
        access.deadline,
    ));
    let mut response = Response::new(body);
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

struct StreamState {
    subscription: Subscription,
    shutdown: watch::Receiver<bool>,
    keep_alive: Interval,
    /// The subscriber's token expires then: the stream ends with `event: expired`.
    expires: Option<Pin<Box<Sleep>>>,
    first: Option<Bytes>,
    done: bool,
}

fn event_stream(
    mut subscription: Subscription,
    shutdown: watch::Receiver<bool>,
    settings: &super::HttpSettings,
    expires: Option<Instant>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    // The first chunk goes out at once: `retry:` (so `onopen` fires), then any reset
    // and replayed events, then the cursor.
    let mut first = BytesMut::from(&encode_retry(settings.retry.as_millis() as u64)[..]);
    if let Some(preamble) = subscription.take_preamble() {
        first.extend_from_slice(&preamble);
    }
    let mut keep_alive = interval_at(Instant::now() + settings.keep_alive, settings.keep_alive);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = StreamState {
        subscription,
        shutdown,
        keep_alive,
        expires: expires.map(|at| Box::pin(sleep_until(at))),
        first: Some(first.freeze()),
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        if st.done {
            return None;
        }
        let chunk = tokio::select! {
            biased;
            _ = st.shutdown.wait_for(|stop| *stop) => return None,
            next = st.subscription.next() => match next {
                Next::Data(bytes) => bytes,
                Next::Overflow { behind } => {
                    st.done = true;
                    tracing::info!(
                        channel = st.subscription.channel(),
                        client = st.subscription.client_id(),
                        behind,
                        "disconnecting a subscriber that fell behind"
                    );
                    encode_event(
                        None,
                        Some("overflow"),
                        None,
                        &format!(
                            r#"{{"reason":"subscriber fell behind its buffer; reconnect with Last-Event-ID","behind":{behind}}}"#
                        ),
                    )
                }
            },
            _ = st.keep_alive.tick() => Bytes::from_static(KEEP_ALIVE),
            _ = expiry(&mut st.expires) => {
                st.done = true;
                encode_event(
                    None,
                    Some("expired"),
                    None,
                    r#"{"reason":"the token expired; reconnect with a new one"}"#,
                )
            }
        };
        Some((Ok(chunk), st))
    })
}

/// Completes when the token expires; never without one.
async fn expiry(expires: &mut Option<Pin<Box<Sleep>>>) {
    match expires {
        Some(sleep) => sleep.as_mut().await,
        None => pending().await,
    }
}
