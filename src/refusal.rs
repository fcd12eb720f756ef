//! Why a request was refused: one kind per answer the node gives instead of serving
//! it, with the HTTP status it is answered with and the label it is counted under
//! (`sse_request_errors_total{kind=...}`). A leaf, so the HTTP layer that answers and
//! the metrics that count read one list.

use axum::http::StatusCode;

/// Kinds of refused requests, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    PayloadTooLarge,
    BadRequest,
    Conflict,
    Overloaded,
    Unauthorized,
    Forbidden,
    /// A request head over `--http.server.maxHeaderBytes` (431).
    HeaderTooLarge,
    /// A request head not received within `--http.server.headerTimeout` (408).
    HeaderTimeout,
    /// A request body not received within `--http.server.bodyTimeout` of its
    /// head (408, and the connection closed).
    BodyTimeout,
    /// A connection from an address that already had
    /// `--http.server.maxConnectionsPerAddress` open (429 and closed).
    TooManyConnectionsFromAddress,
    /// A publish refused because the node is draining before it stops (503 with
    /// `Retry-After`: publish on another node, with the same `id`).
    Draining,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::PayloadTooLarge,
        ErrorKind::BadRequest,
        ErrorKind::Conflict,
        ErrorKind::Overloaded,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::HeaderTooLarge,
        ErrorKind::HeaderTimeout,
        ErrorKind::BodyTimeout,
        ErrorKind::TooManyConnectionsFromAddress,
        ErrorKind::Draining,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::HeaderTooLarge => "header_too_large",
            ErrorKind::HeaderTimeout => "header_timeout",
            ErrorKind::BodyTimeout => "body_timeout",
            ErrorKind::TooManyConnectionsFromAddress => "too_many_connections_from_address",
            ErrorKind::Draining => "draining",
        }
    }

    /// The HTTP status a refusal of this kind is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Overloaded | ErrorKind::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::HeaderTimeout | ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::TooManyConnectionsFromAddress => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}
