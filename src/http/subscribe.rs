//! Subscribe routes: what a subscribe asks for (its channels, its access, where it
//! resumes) and the stream that answers it. The router's handlers answer with a
//! hyper body; the server answers most subscribes on the socket itself
//! (`subscriber`), calling [`open`] directly.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::auth::SubscribeAccess;
use super::subscriber::{EventStream, Source};
use super::{ApiError, AppState};
use crate::broker::{
    pattern_prefix, ManySubscribeError, MultiSubscription, Resume, SubscribeError, Subscription,
};
use crate::event::{validate_name, Cursor};
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(channel) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let last_event_id = last_event_id(&headers, query.ok());
    let stream = open(&state, access, &channel, None, last_event_id.as_deref())?;
    Ok(stream_response(Body::from_stream(stream)))
}

pub(super) async fn subscribe_client(
    State(state): State<AppState>,
    access: SubscribeAccess,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<SubscribeQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((channel, client)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let last_event_id = last_event_id(&headers, query.ok());
    let stream = open(
        &state,
        access,
        &channel,
        Some(&client),
        last_event_id.as_deref(),
    )?;
    Ok(stream_response(Body::from_stream(stream)))
}

/// Where a subscribe resumes. The header wins over the query parameter: browsers
/// send the header on their own reconnects, while the query keeps the id the page
/// was first opened with. An empty id is none.
pub(super) fn last_event_id(
    headers: &HeaderMap,
    query: Option<Query<SubscribeQuery>>,
) -> Option<String> {
    headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| query.and_then(|Query(q)| q.last_event_id))
        .filter(|id| !id.is_empty())
}

/// Opens the stream of a subscribe to `channel` (one name, a list, or patterns) as
/// `client`, if named, for a request with `access`, resuming after
/// `last_event_id`.
pub(super) fn open(
    state: &AppState,
    access: SubscribeAccess,
    channel: &str,
    client: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<EventStream, ApiError> {
    if let Some(client) = client {
        validate_name("client", client).map_err(|e| ApiError::bad_request(e.0))?;
    }
    let set = channel_set(channel, state.settings.max_channels_per_stream)?;
    for channel in &set {
        access.access.subscribe(channel, client)?;
    }
    let source = match &set[..] {
        // A pattern is always wrapped: its events come from several channels.
        [name] if pattern_prefix(name).is_none() => {
            Source::One(subscribe_one(state, channel, client, last_event_id)?)
        }
        _ => Source::Many(Box::new(subscribe_many(
            state,
            &set,
            client,
            last_event_id,
        )?)),
    };
    Ok(EventStream::new(source, &state.settings, access.deadline))
}

/// A stream's answer: `200`, the event-stream headers, and `body`.
pub(super) fn stream_response(body: Body) -> Response {
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
    response
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
