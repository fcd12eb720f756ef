//! Answers this crate writes on a socket itself, not through hyper: a subscriber's
//! response head (see `subscriber`), a direct publish's answer (see `publisher`)
//! and the refusals of a request head the server loop turns away (431, 408, 429).

use std::cell::RefCell;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::AppState;

/// The head of an answer that ends its connection: `content_length` if the body
/// has one (an event stream is close-delimited), and `connection: close`.
pub(super) fn response_head(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    status_and_headers(&mut head, status, headers, true);
    if let Some(len) = content_length {
        head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// A whole answer with a body, as hyper writes it on a keep-alive connection: the
/// headers in the order the response has them (a `connection` header included),
/// then `content-length`, `connection: close` if the connection ends after it
/// (`closing`) and the response did not say so, and `date`.
pub(super) fn whole_answer(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    closing: bool,
) -> Vec<u8> {
    let mut whole = Vec::with_capacity(320 + body.len());
    status_and_headers(&mut whole, status, headers, false);
    whole.extend_from_slice(b"content-length: ");
    whole.extend_from_slice(body.len().to_string().as_bytes());
    whole.extend_from_slice(b"\r\n");
    let says_close = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if closing && !says_close {
        whole.extend_from_slice(b"connection: close\r\n");
    }
    whole.extend_from_slice(b"date: ");
    date(&mut whole);
    whole.extend_from_slice(b"\r\n\r\n");
    whole.extend_from_slice(body);
    whole
}

/// The status line and the headers, but for the framing ones (`content-length`,
/// `transfer-encoding`, and `connection` if `closing` writes its own).
fn status_and_headers(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    closing: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if (closing && name == header::CONNECTION)
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

thread_local! {
    /// The `date` value of the current second, formatted once per second and thread
    /// (as hyper caches its own).
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (`Mon, 07 Dec 2026 16:18:04 GMT`).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// What the router's layers do to every answer, for the answers this crate writes
/// itself from a route's response (`subscriber`, `publisher`): errors counted,
/// CORS if enabled, the security headers.
pub(super) fn layered(state: &AppState, mut response: Response) -> Response {
    super::count_error(state, &response);
    if state.settings.cors_enabled {
        super::allow_any_origin(response.headers_mut());
    }
    super::headers::secure(response.headers_mut());
    response
}

/// Answers a refused request head and closes. Closing a socket with unread input
/// makes the kernel reset the connection, which can destroy the answer before the
/// client reads it; so, after answering, the rest of its input is read and dropped
/// for a moment (a "lingering close", bounded in time and bytes).
pub(super) async fn write_plain<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io,
    status: StatusCode,
    message: &str,
) -> io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::headers::secure(&mut headers);
    io.write_all(&response_head(status, &headers, Some(body.len())))
        .await?;
    io.write_all(body.as_bytes()).await?;
    io.shutdown().await?;
    // On the heap: an array here would enlarge every connection's task.
    let mut sink = vec![0u8; 4096];
    let mut drained = 0usize;
    let linger = async {
        while drained < 1 << 20 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
    Ok(())
}
