//! Every refused request, as one type that renders the JSON `{"error": "..."}` answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::broker::ChannelsFull;
use crate::refusal::ErrorKind;

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl From<ChannelsFull> for ApiError {
    fn from(full: ChannelsFull) -> Self {
        ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "this node is at its limit of {} channels (--channels.max) and every one has subscribers; retry later or elsewhere",
                full.limit
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response =
            (status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.kind == ErrorKind::Unauthorized {
            // RFC 6750: say which scheme a client should use.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"sse-cluster\""),
            );
        }
        if self.kind == ErrorKind::Draining {
            // The node stops soon; another node takes the publish now.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if self.kind == ErrorKind::BodyTimeout {
            // The rest of the body may still come: the connection cannot carry
            // another request, and hyper closes it after this answer.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        // The counting middleware reads this to attribute the error.
        response.extensions_mut().insert(self.kind);
        response
    }
}
