//! A subscriber's event stream, as chunks of bytes to write: the same for the
//! socket's own writer ([`super::socket::pump`]) and for a hyper body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Bytes;
use bytes::BytesMut;
use futures_util::Stream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::broker::{wrap_data, MultiSubscription, Next, Sink, Subscription};
use crate::event::{encode_event, encode_retry};

/// A subscriber's event stream: the first chunk (`retry:`, any reset and replayed
/// events, the cursor), then events as they come, keep-alive comments while idle
/// (both from [`Subscription::poll_next`]), and a last event when the subscriber
/// overflows or its token expires. Polled by hand rather than built from
/// combinators: it is woken once per event per subscriber, the hottest path there is.
pub(crate) struct EventStream {
    source: Source,
    /// The subscriber's token expires then: the stream ends with `event: expired`.
    expires: Option<Pin<Box<Sleep>>>,
    expired: bool,
    first: Option<Bytes>,
    done: bool,
}

/// What a stream reads: one channel, or several (see `broker::multi`).
pub(crate) enum Source {
    One(Subscription),
    /// Boxed: streams of one channel, the many, stay as small as before.
    Many(Box<MultiSubscription>),
}

impl EventStream {
    pub(in crate::http) fn new(
        mut source: Source,
        settings: &crate::http::HttpSettings,
        expires: Option<Instant>,
    ) -> Self {
        // The first chunk goes out at once: `retry:` (so `onopen` fires), then any
        // reset and replayed events, then the cursor.
        let mut first = BytesMut::from(&encode_retry(settings.retry.as_millis() as u64)[..]);
        let preamble = match &mut source {
            Source::One(subscription) => subscription.take_preamble(),
            Source::Many(subscription) => subscription.take_preamble(),
        };
        if let Some(preamble) = preamble {
            first.extend_from_slice(&preamble);
        }
        EventStream {
            source,
            expires: expires.map(|at| Box::pin(sleep_until(at))),
            expired: false,
            first: Some(first.freeze()),
            done: false,
        }
    }

    /// The first chunk, if not yet taken (to send it with the response head).
    pub(crate) fn take_first(&mut self) -> Option<Bytes> {
        self.first.take()
    }

    /// Lets publishers write events to `sink` directly while this stream waits (see
    /// [`Subscription::attach`]); the stream's writer must then write exactly the
    /// chunks this stream yields, and nothing else.
    pub(crate) fn attach(&mut self, sink: Arc<dyn Sink>) {
        // A stream of several channels frames its events itself: no direct writes.
        if let Source::One(subscription) = &mut self.source {
            subscription.attach(sink);
        }
    }

    fn end_with(&mut self, frame: Bytes) -> Poll<Option<Bytes>> {
        self.done = true;
        Poll::Ready(Some(frame))
    }

    /// The next chunk to write; `None` when the stream is over.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(expires) = &mut self.expires {
            self.expired = self.expired || expires.as_mut().poll(cx).is_ready();
        }
        if self.expired {
            // The last bytes are ours: take the socket back from publishers first.
            let carry = match &mut self.source {
                Source::One(subscription) => ready!(subscription.poll_release(cx)),
                Source::Many(_) => None,
            };
            let expired = encode_event(
                None,
                Some("expired"),
                None,
                r#"{"reason":"the token expired; reconnect with a new one"}"#,
            );
            return self.end_with(match carry {
                Some(carry) => [carry, expired].concat().into(),
                None => expired,
            });
        }
        let next = match &mut self.source {
            Source::One(subscription) => ready!(subscription.poll_next(cx)),
            Source::Many(subscription) => ready!(subscription.poll_next(cx)),
        };
        match next {
            Next::Data(bytes) => Poll::Ready(Some(bytes)),
            Next::Overflow { behind } => {
                let (channel, client) = match &self.source {
                    Source::One(s) => (Some(s.channel()), s.client_id()),
                    Source::Many(s) => (s.overflowed_channel(), s.client_id()),
                };
                tracing::info!(
                    channel,
                    client,
                    behind,
                    "disconnecting a subscriber that fell behind"
                );
                let mut data = format!(
                    r#"{{"reason":"subscriber fell behind its buffer; reconnect with Last-Event-ID","behind":{behind}}}"#
                );
                if let (Source::Many(_), Some(channel)) = (&self.source, channel) {
                    data = wrap_data(channel, &data);
                }
                self.end_with(encode_event(None, Some("overflow"), None, &data))
            }
            Next::Closed => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}
