//! The headers every answer of the node carries for browsers' sake, in one place:
//! the router's answers get them from [`layer`], answers the server writes on the
//! socket itself (431, 408, 429) from [`secure`].

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// Adds the security headers to an answer's `headers`:
///
/// - every answer: `X-Content-Type-Options: nosniff`, so a browser never reads a
///   JSON error or a relayed payload as HTML or script;
/// - every answer but an event stream (whose `Cache-Control: no-cache` is what the
///   SSE specification expects, and which is never framed or rendered):
///   `Cache-Control: no-store` (status, metrics, publish answers and errors are
///   nobody's to keep), `Content-Security-Policy: default-src 'none';
///   frame-ancestors 'none'` and `X-Frame-Options: DENY` (nothing the node
///   answers is a page to load resources for or to frame).
///
/// A header the route set itself is left alone.
pub(crate) fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if stream {
        return;
    }
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}

/// [`secure`] as a `map_response` layer for a router.
pub(crate) async fn layer(mut response: Response) -> Response {
    secure(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_their_cache_control_and_other_answers_are_not_stored() {
        let mut stream = HeaderMap::new();
        stream.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        stream.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        secure(&mut stream);
        assert_eq!(stream[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(stream[header::CACHE_CONTROL], "no-cache");
        assert!(!stream.contains_key(header::X_FRAME_OPTIONS));

        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        secure(&mut json);
        assert_eq!(json[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(json[header::CACHE_CONTROL], "no-store");
        assert_eq!(json[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(
            json[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; frame-ancestors 'none'"
        );
    }
}
