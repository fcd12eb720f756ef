//! Publish routes: the only routes of the node that read a request body (the relay
//! endpoint and the others are `GET`s and never read one).

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::{Access, PublishAccess};
use super::{bulk, ApiError, AppState};
use crate::broker::Published;
use crate::event::{validate_name, Publish};
use crate::refusal::ErrorKind;

#[derive(Debug, Serialize)]
pub(super) struct PublishAnswer {
    /// The cursor after this event on this node (single-channel publishes).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Local subscribers the event was queued for.
    delivered: usize,
    /// The publisher id was already in the replay window; nothing new was delivered.
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<usize>,
}

impl PublishAnswer {
    /// The answer to one event; `all` for a publish to every channel, which says how
    /// many channels it reached.
    fn new(outcome: Published, all: bool) -> Self {
        PublishAnswer {
            id: outcome.id,
            delivered: outcome.delivered,
            duplicate: outcome.duplicate,
            channels: all.then_some(outcome.channels),
        }
    }
}

/// A checked publish body: one event (`application/json`) or many (a bulk publish,
/// `application/x-ndjson`).
enum Events {
    One(Publish),
    Many(Vec<Publish>),
}

pub(super) async fn publish(
    _: Accepting,
    State(state): State<AppState>,
    PublishAccess(access): PublishAccess,
    path: Result<Path<String>, PathRejection>,
    ContentType(content_type): ContentType,
    PublishBody(body, _turn): PublishBody,
) -> Result<Response, ApiError> {
    let channel = path.map(|Path(channel)| channel);
    let channel = channel.map_err(|e| ApiError::bad_request(e.body_text()))?;
    publish_to(&state, &access, &channel, content_type.as_ref(), body)
}

/// A publish to one channel once its request is read (the head checked for draining
/// and authorization, the body read): the handler of `POST /channel/{channel}`
/// after its extractors, and what the server's direct publish path calls (see
/// `publisher`).
pub(super) fn publish_to(
    state: &AppState,
    access: &Access,
    channel: &str,
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    validate_name("channel", channel).map_err(|e| ApiError::bad_request(e.0))?;
    access.publish(channel)?;
    match read_events(state, content_type, body)? {
        Events::One(publish) => {
            let outcome = state.broker.publish(channel, &publish, None)?;
            Ok(Json(PublishAnswer::new(outcome, false)).into_response())
        }
        Events::Many(events) => {
            let outcomes = state.broker.publish_batch(channel, &events, None)?;
            Ok(bulk::answer(
                outcomes.into_iter().map(|o| PublishAnswer::new(o, false)),
            ))
        }
    }
}

pub(super) async fn publish_all(
    _: Accepting,
    State(state): State<AppState>,
    PublishAccess(access): PublishAccess,
    ContentType(content_type): ContentType,
    PublishBody(body, _turn): PublishBody,
) -> Result<Response, ApiError> {
    access.publish_all()?;
    match read_events(&state, content_type.as_ref(), body)? {
        Events::One(publish) => {
            let outcome = state.broker.publish_all(&publish);
            Ok(Json(PublishAnswer::new(outcome, true)).into_response())
        }
        Events::Many(events) => {
            let outcomes = state.broker.publish_all_batch(&events);
            Ok(bulk::answer(
                outcomes.into_iter().map(|o| PublishAnswer::new(o, true)),
            ))
        }
    }
}

pub(super) async fn publish_client(
    _: Accepting,
    State(state): State<AppState>,
    PublishAccess(access): PublishAccess,
    path: Result<Path<(String, String)>, PathRejection>,
    ContentType(content_type): ContentType,
    PublishBody(body, _turn): PublishBody,
) -> Result<Response, ApiError> {
    let Path((channel, client)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_name("channel", &channel).map_err(|e| ApiError::bad_request(e.0))?;
    validate_name("client", &client).map_err(|e| ApiError::bad_request(e.0))?;
    access.publish(&channel)?;
    let events = read_events(&state, content_type.as_ref(), body)?;
    if !state.broker.has_client(&channel, &client) && !state.cluster.has_peers() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("client {client:?} is not subscribed to channel {channel:?}"),
        ));
    }
    match events {
        Events::One(publish) => {
            let outcome = state.broker.publish(&channel, &publish, Some(&client))?;
            Ok(Json(PublishAnswer::new(outcome, false)).into_response())
        }
        Events::Many(events) => {
            let outcomes = state
                .broker
                .publish_batch(&channel, &events, Some(&client))?;
            Ok(bulk::answer(
                outcomes.into_iter().map(|o| PublishAnswer::new(o, false)),
            ))
        }
    }
}

/// The node takes publishes: it is not draining before a stop. Checked first, before
/// the body is read: a refused publisher moves on to another node at once, with the
/// same `id` (the idempotency key keeps it exactly once).
pub(super) struct Accepting;

impl FromRequestParts<AppState> for Accepting {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if *state.draining.borrow() {
            return Err(ApiError::new(
                ErrorKind::Draining,
                "this node is stopping and takes no new publishes; publish on another node (with the same id)",
            ));
        }
        Ok(Accepting)
    }
}

/// A publish request's body, read as the handler's last extractor (after the auth
/// check, right after the head): at most `--http.server.maxBodyBytes` (413 past
/// it; `--http.server.maxBulkBytes` for a bulk publish), all of it within
/// `--http.server.bodyTimeout`. A body not all received by
/// then is refused at once with 408 (and the connection closed, see `ApiError`): a
/// client that sent a head cannot hold its connection by trickling or withholding
/// the body. Other failures are kept for the handler, which answers its own checks
/// (names, content type) first.
///
/// A bulk body waits first for a turn among the bulk publishes in progress
/// ([`super::BULK_PUBLISHES_AT_ONCE`], held until the handler is done), so that the
/// memory bulk bodies hold stays bounded however many clients send one; no turn
/// within the body timeout is 503.
pub(super) struct PublishBody(Result<Bytes, ApiError>, Option<OwnedSemaphorePermit>);

impl FromRequest<AppState> for PublishBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let within = state.settings.body_timeout;
        let is_bulk = bulk::is_bulk(request.headers().get(header::CONTENT_TYPE));
        let (limit, option) = if is_bulk {
            (state.settings.max_bulk_bytes, "--http.server.maxBulkBytes")
        } else {
            (state.settings.max_body_bytes, "--http.server.maxBodyBytes")
        };
        let turn = if is_bulk {
            let turn = tokio::time::timeout(within, state.bulk_turns.clone().acquire_owned());
            match turn.await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(ApiError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "{} bulk publishes are in progress on this node, the most it reads at once; retry later or elsewhere",
                            super::BULK_PUBLISHES_AT_ONCE
                        ),
                    ))
                }
            }
        } else {
            None
        };
        let limited = Limited::new(request.into_body(), limit);
        let Ok(read) = tokio::time::timeout(within, limited.collect()).await else {
            return Err(body_timed_out(within));
        };
        let body = match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<LengthLimitError>() => Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("request body is larger than {option}"),
            )),
            Err(error) => Err(ApiError::bad_request(format!(
                "cannot read the request body: {error}"
            ))),
        };
        Ok(PublishBody(body, turn))
    }
}

/// The refusal of a body not all received `within` the body timeout.
pub(super) fn body_timed_out(within: std::time::Duration) -> ApiError {
    let message = format!(
        "the request body did not all arrive within --http.server.bodyTimeout ({within:?})"
    );
    ApiError::new(ErrorKind::BodyTimeout, message)
}

/// A request's `Content-Type`, the one header a publish handler reads: taken alone
/// rather than with a copy of the whole header map.
pub(super) struct ContentType(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for ContentType {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ContentType(
            parts.headers.get(header::CONTENT_TYPE).cloned(),
        ))
    }
}

/// Checks the content type and parses the body. `application/json` (one event) and
/// `application/x-ndjson` (a bulk publish, one event a line) may carry parameters
/// (`; charset=utf-8`); anything else is 415.
fn read_events(
    state: &AppState,
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, ApiError>,
) -> Result<Events, ApiError> {
    let content_type = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = bulk::essence(content_type);
    if essence.eq_ignore_ascii_case("application/json") {
        return Publish::from_json(&body?)
            .map(Events::One)
            .map_err(|e| ApiError::bad_request(e.0));
    }
    if essence.eq_ignore_ascii_case(bulk::NDJSON) {
        let (max_line, max_events) = (state.settings.max_body_bytes, state.broker.max_batch());
        return bulk::parse_ndjson(&body?, max_line, max_events).map(Events::Many);
    }
    Err(ApiError::new(
        ErrorKind::UnsupportedMediaType,
        format!(
            "Content-Type must be application/json (or application/x-ndjson, one event a line), got {content_type:?}"
        ),
    ))
}
