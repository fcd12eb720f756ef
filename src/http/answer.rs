//! Answers this crate writes on a socket itself, not through hyper: a subscriber's
//! response head (see `subscriber`) and the refusals of a request head the server
//! loop turns away (431, 408, 429).

use std::io;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(super) fn response_head(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(len) = content_length {
        head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
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
