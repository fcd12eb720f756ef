//! Bulk publishes: an `application/x-ndjson` body is one publish body per line, all
//! checked before any is applied, and answered with one result per event line.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::event::Publish;
use crate::refusal::ErrorKind;

/// The content type of a bulk publish and of its answer.
pub(super) const NDJSON: &str = "application/x-ndjson";

/// The media type of a `Content-Type` value, without its parameters.
pub(super) fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Whether a request's `Content-Type` is that of a bulk publish.
pub(super) fn is_bulk(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v).eq_ignore_ascii_case(NDJSON))
}

/// Parses a bulk publish body: each line is a publish body, read and checked as a
/// single publish's is (the same rules and messages, after `line N: `), at most
/// `max_line_bytes` long (`--http.server.maxBodyBytes`, else 413). Blank lines
/// (a final line break, `\r\n` endings, spacing between events) are skipped, and
/// line numbers count them, so `line N` is the N-th line of the body as sent. More
/// than `max_events` events is 413; none at all is 400.
pub fn parse_ndjson(
    body: &[u8],
    max_line_bytes: usize,
    max_events: usize,
) -> Result<Vec<Publish>, ApiError> {
    let mut events = Vec::new();
    for (index, line) in body.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        if line.len() > max_line_bytes {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "line {number}: event is larger than --http.server.maxBodyBytes ({max_line_bytes} bytes)"
                ),
            ));
        }
        if events.len() == max_events {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "line {number}: more than {max_events} events in one request (the smaller of \
                     --subscriber.buffer and --relay.queueEvents); send the rest in another"
                ),
            ));
        }
        let publish = Publish::from_json(line)
            .map_err(|e| ApiError::bad_request(format!("line {number}: {}", e.0)))?;
        events.push(publish);
    }
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "the body holds no events: send one JSON publish body per line",
        ));
    }
    Ok(events)
}

/// The answer to a bulk publish: one JSON object per event line, in order.
pub(super) fn answer<T: serde::Serialize>(answers: impl IntoIterator<Item = T>) -> Response {
    let mut body = Vec::new();
    for answer in answers {
        // Plain structs of strings and numbers: serialising them cannot fail.
        let _ = serde_json::to_writer(&mut body, &answer);
        body.push(b'\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> (StatusCode, String) {
        let error = parse_ndjson(body.as_bytes(), 64, 3).expect_err(body);
        (error.status(), error.message)
    }

    #[test]
    fn every_line_is_a_publish_body_and_blank_lines_are_skipped() {
        let body = "{\"data\":1}\r\n\n  \n{\"id\":\"a\",\"event\":\"e\",\"data\":[ 2 ]}\n";
        let events = parse_ndjson(body.as_bytes(), 64, 3).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "1");
        assert_eq!(events[1].id.as_deref(), Some("a"));
        assert_eq!(events[1].data, "[2]");
    }

    #[test]
    fn the_first_bad_line_is_named_with_the_single_publish_message() {
        let single = Publish::from_json(br#"{"event":"reset","data":1}"#).unwrap_err();
        let (status, message) =
            refused("{\"data\":1}\n\n{\"event\":\"reset\",\"data\":1}\n{\"data\":}\n");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(message, format!("line 3: {}", single.0));
        let (status, message) = refused("{\"data\":1}\n{\"data\":1,\"retry\":700000}");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            message.starts_with("line 2: retry must be at most"),
            "{message}"
        );
    }

    #[test]
    fn long_lines_many_events_and_no_events_are_refused() {
        let long = format!("{{\"data\":1}}\n{{\"data\":\"{}\"}}\n", "x".repeat(64));
        let (status, message) = refused(&long);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message.starts_with("line 2: ") && message.contains("maxBodyBytes"));
        let (status, message) = refused(&"{\"data\":1}\n".repeat(4));
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            message.starts_with("line 4: more than 3 events"),
            "{message}"
        );
        assert!(parse_ndjson("{\"data\":1}\n".repeat(3).as_bytes(), 64, 3).is_ok());
        let (status, _) = refused("\n \r\n");
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
