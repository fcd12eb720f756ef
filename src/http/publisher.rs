//! A publisher's keep-alive connection, answered on the socket while its requests
//! are plain single-event publishes.
//!
//! A publish through hyper and the router spends most of its time (its CPU time in
//! user space) in the general machinery around the handler: hyper's dispatcher,
//! routing, the layers, the extractors and their allocations. A backend that
//! publishes one event per request pays that on every event. So the server loop
//! (`server.rs`) answers a run of plain publishes itself, the way it answers a
//! subscribe (see `subscriber`), and hands the connection to hyper at the first
//! request that is anything else.
//!
//! The way through:
//!
//! 1. The server loop reads a request head within its deadline and size, and
//!    [`publish_request`] keeps only a plain publish: `POST /channel/{channel}` over
//!    HTTP/1.1, one `Content-Length` within `--http.server.maxBodyBytes`, a JSON
//!    `Content-Type`, no `Transfer-Encoding`, `Expect` or `Upgrade`, `Connection`
//!    absent, `close` or `keep-alive`, a path segment that decodes to UTF-8.
//!    Anything else (a bulk publish, an oversized body, any other route) goes to
//!    hyper and the router, with the bytes already read replayed, and the
//!    connection stays with hyper.
//! 2. [`serve`] makes the checks the router makes before it reads a body: the
//!    connection limit, draining, authorization (the same functions). A refused
//!    request also goes to the router, which refuses it again and answers it: a
//!    refusal has one answer, and an unread body is hyper's to deal with.
//! 3. It reads the body, within `--http.server.bodyTimeout` (408 and a close past
//!    it, the router's answer), and calls [`publish_to`], the same function the
//!    router's handler calls after its extractors. The answer (an event's result or
//!    an error) gets what the router's layers add and is written as hyper writes
//!    it: the same status, headers and body, and a `date`.
//! 4. The server loop then reads the next request head on the connection, with
//!    the deadline hyper keeps between requests; a pipelined request already read
//!    is served first.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, Request, Uri, Version};
use axum::response::IntoResponse;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::answer::{layered, whole_answer};
use super::auth::PublishAccess;
use super::publish::{body_timed_out, publish_to, Accepting};
use super::{bulk, AppState};

/// A plain publish's request head, as [`publish_request`] read it.
pub(super) struct PublishHead {
    parts: Parts,
    /// The channel, percent-decoded as the router's `Path` decodes it.
    channel: String,
    body_len: usize,
    /// The client sent `Connection: close`.
    close: bool,
}

/// What the connection does after [`serve`].
pub(super) enum After {
    /// Read the next request; the request served is gone from the buffer.
    Next,
    /// Close it.
    Close,
    /// Hand it to hyper with the buffer as it was (the request not served).
    Router,
}

/// The request, if `head` is a plain publish with a body of at most
/// `max_body_bytes` (see the module's comment); `None` leaves it to hyper and the
/// router.
pub(super) fn publish_request(head: &[u8], max_body_bytes: usize) -> Option<PublishHead> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    if parsed.method != Some("POST") || parsed.version != Some(1) {
        return None;
    }
    let target = parsed.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let segment = path.strip_prefix("/channel/")?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let channel = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    let (mut body_len, mut close, mut json) = (None, false, false);
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).ok()?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let digits = value.bytes().all(|b| b.is_ascii_digit());
            if body_len.is_some() || value.is_empty() || !digits {
                return None;
            }
            body_len = Some(value.parse::<usize>().ok()?);
        } else if h.name.eq_ignore_ascii_case("content-type") {
            if json || !bulk::essence(value).eq_ignore_ascii_case("application/json") {
                return None;
            }
            json = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                close = true;
            } else if !value.eq_ignore_ascii_case("keep-alive") {
                return None;
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|name| h.name.eq_ignore_ascii_case(name))
        {
            return None;
        }
    }
    let body_len = body_len.filter(|&len| len <= max_body_bytes)?;
    if !json {
        return None;
    }
    let uri: Uri = target.parse().ok()?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        request = request.header(h.name, h.value);
    }
    let parts = request.body(()).ok()?.into_parts().0;
    Some(PublishHead {
        parts,
        channel,
        body_len,
        close,
    })
}

/// Answers the publish whose head is `buf[..head_len]`, reading its body from `io`
/// (see the module's comment).
pub(super) async fn serve<Io>(
    io: &mut Io,
    buf: &mut BytesMut,
    head_len: usize,
    request: PublishHead,
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> After
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let PublishHead {
        mut parts,
        channel,
        body_len,
        mut close,
    } = request;
    if super::over_connection_limit(state).is_some()
        || Accepting::from_request_parts(&mut parts, state)
            .await
            .is_err()
    {
        return After::Router;
    }
    let Ok(PublishAccess(access)) = PublishAccess::from_request_parts(&mut parts, state).await
    else {
        return After::Router;
    };
    let end = head_len + body_len;
    let within = state.settings.body_timeout;
    let response = match tokio::time::timeout(within, read_to(io, buf, end)).await {
        Ok(Ok(())) => {
            let request = buf.split_to(end).freeze();
            let body = request.slice(head_len..);
            let content_type = parts.headers.get(header::CONTENT_TYPE);
            publish_to(state, &access, &channel, content_type, Ok(body))
                .unwrap_or_else(IntoResponse::into_response)
        }
        Ok(Err(_)) => return After::Close,
        Err(_) => {
            // The rest of the body may still come: nothing more is read.
            close = true;
            body_timed_out(within).into_response()
        }
    };
    let (answer, body) = layered(state, response).into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return After::Close;
    };
    // A stopping server closes the connection after this answer, as hyper does.
    close |= *stop.borrow();
    let whole = whole_answer(answer.status, &answer.headers, &body, close);
    if io.write_all(&whole).await.is_err() {
        return After::Close;
    }
    if close {
        let _ = io.shutdown().await;
        return After::Close;
    }
    After::Next
}

/// Reads until `buf` holds at least `end` bytes.
async fn read_to<Io: AsyncRead + Unpin>(
    io: &mut Io,
    buf: &mut BytesMut,
    end: usize,
) -> std::io::Result<()> {
    while buf.len() < end {
        buf.reserve(end - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(request_line: &str, headers: &[&str]) -> Vec<u8> {
        let mut head = format!("{request_line}\r\nHost: test\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    const JSON: &str = "Content-Type: application/json; charset=utf-8";

    #[test]
    fn only_plain_single_event_publishes_are_taken() {
        let plain = head(
            "POST /channel/a%2Eb?x=1 HTTP/1.1",
            &[JSON, "Content-Length: 12"],
        );
        let request = publish_request(&plain, 64).expect("a plain publish");
        assert_eq!((request.channel.as_str(), request.body_len), ("a.b", 12));
        assert!(!request.close);
        let close = head(
            "POST /channel/a HTTP/1.1",
            &[JSON, "Connection: close", "Content-Length: 1"],
        );
        assert!(publish_request(&close, 64).expect("with close").close);

        let declined = [
            (
                "HTTP/1.0",
                head("POST /channel/a HTTP/1.0", &[JSON, "Content-Length: 1"]),
            ),
            (
                "GET",
                head("GET /channel/a HTTP/1.1", &[JSON, "Content-Length: 1"]),
            ),
            (
                "every channel",
                head("POST /channel HTTP/1.1", &[JSON, "Content-Length: 1"]),
            ),
            (
                "a client",
                head(
                    "POST /channel/a/client/b HTTP/1.1",
                    &[JSON, "Content-Length: 1"],
                ),
            ),
            (
                "no segment",
                head("POST /channel/ HTTP/1.1", &[JSON, "Content-Length: 1"]),
            ),
            (
                "not UTF-8",
                head("POST /channel/%FF HTTP/1.1", &[JSON, "Content-Length: 1"]),
            ),
            ("no length", head("POST /channel/a HTTP/1.1", &[JSON])),
            (
                "too long",
                head("POST /channel/a HTTP/1.1", &[JSON, "Content-Length: 65"]),
            ),
            (
                "signed length",
                head("POST /channel/a HTTP/1.1", &[JSON, "Content-Length: +1"]),
            ),
            (
                "two lengths",
                head(
                    "POST /channel/a HTTP/1.1",
                    &[JSON, "Content-Length: 1", "Content-Length: 1"],
                ),
            ),
            (
                "chunked",
                head(
                    "POST /channel/a HTTP/1.1",
                    &[JSON, "Content-Length: 1", "Transfer-Encoding: chunked"],
                ),
            ),
            (
                "Expect",
                head(
                    "POST /channel/a HTTP/1.1",
                    &[JSON, "Expect: 100-continue", "Content-Length: 1"],
                ),
            ),
            (
                "Upgrade",
                head(
                    "POST /channel/a HTTP/1.1",
                    &[JSON, "Connection: upgrade", "Content-Length: 1"],
                ),
            ),
            (
                "bulk",
                head(
                    "POST /channel/a HTTP/1.1",
                    &["Content-Type: application/x-ndjson", "Content-Length: 1"],
                ),
            ),
            (
                "no type",
                head("POST /channel/a HTTP/1.1", &["Content-Length: 1"]),
            ),
            (
                "incomplete",
                b"POST /channel/a HTTP/1.1\r\nContent-Length: 1\r\n".to_vec(),
            ),
        ];
        for (case, head) in declined {
            assert!(
                publish_request(&head, 64).is_none(),
                "{case} goes to the router"
            );
        }
    }
}
