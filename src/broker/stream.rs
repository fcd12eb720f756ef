//! A subscriber's side of its channel: what it gets next (events, coalesced into one
//! write when several wait; an overflow; the end), and its direct-write sink.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::event::{encode_id_only, Cursor, Frontier, KEEP_ALIVE};
use crate::faults::Bug;

use super::channel::{Channel, Entry, Mode, Subscriber};
use super::{Broker, Shared, Sink};

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// Bytes to write: one frame, or several coalesced into one buffer.
    Data(Bytes),
    /// The subscriber fell further behind than its buffer; end the stream.
    Overflow { behind: u64 },
    /// The node is closing its streams.
    Closed,
}

/// What [`Subscription::poll_entries`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Polled {
    /// Entries for the subscriber.
    Entries,
    /// Nothing to send, and the stream has been silent for the keep-alive interval.
    KeepAlive,
    /// The subscriber fell further behind than its buffer.
    Overflow { behind: u64 },
    /// The node is closing its streams.
    Closed,
}

/// One subscriber's place in a channel. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(super) broker: Broker,
    pub(super) channel: Arc<Channel>,
    pub(super) id: u64,
    pub(super) client: Arc<str>,
    pub(super) preamble: Option<Bytes>,
}

/// Most bytes coalesced into one write for a subscriber that has several frames waiting.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

impl Subscription {
    pub fn client_id(&self) -> &str {
        &self.client
    }

    pub fn channel(&self) -> &str {
        &self.channel.name
    }

    /// The first bytes of the stream: reset signal, replayed events and the cursor.
    pub fn take_preamble(&mut self) -> Option<Bytes> {
        self.preamble.take()
    }

    /// Lets appends write this subscriber's events to `sink` themselves while its
    /// task waits with nothing to write. The task must then write only what
    /// [`Subscription::poll_next`] and [`Subscription::poll_release`] give it.
    pub fn attach(&mut self, sink: Arc<dyn Sink>) {
        if let Some(me) = self.channel.log().subscribers.get_mut(&self.id) {
            me.sink = Some(sink);
        }
    }

    /// Waits for the next events for this subscriber.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next bytes for this subscriber, or `Pending` with its waker left with the
    /// channel: the append that has an event for it wakes it, or writes the event to
    /// its sink instead (see [`Subscription::attach`]).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let shared = &self.broker.shared;
        let buffer = shared.settings.subscriber_buffer as u64;
        let mut guard = self.channel.log();
        let log = &mut *guard;
        let head = log.head();
        let Some(me) = log.subscribers.get_mut(&self.id) else {
            return Poll::Ready(Next::Closed);
        };
        if me.being_written(cx) {
            // The append wakes or parks us when done.
            return Poll::Pending;
        }
        me.mode = Mode::Running;
        if let Some(carry) = me.carry.take() {
            return Poll::Ready(Next::Data(carry));
        }
        if shared.closing.load(Relaxed) {
            if self.broker.planted(Bug::EarlyUnsubscribe) && me.next < head {
                // The planted bug: off the channel at once, with the channel's cursor.
                me.next = head;
                let cursor = Cursor {
                    time_ms: shared.clock.now_ms(),
                    frontier: log.frontier.clone(),
                };
                return Poll::Ready(Next::Data(encode_id_only(&cursor.encode())));
            }
            return Poll::Ready(Next::Closed);
        }
        if (me.next < log.base || head - me.next > buffer)
            && self.broker.planted(Bug::EarlyUnsubscribe)
        {
            // The planted bug: off the channel at once, with the channel's cursor,
            // as if it had been written everything.
            me.next = head;
            let cursor = Cursor {
                time_ms: shared.clock.now_ms(),
                frontier: log.frontier.clone(),
            };
            return Poll::Ready(Next::Data(encode_id_only(&cursor.encode())));
        }
        if me.next < log.base || head - me.next > buffer {
            shared
                .metrics
                .slow_subscriber_disconnects
                .fetch_add(1, Relaxed);
            return Poll::Ready(Next::Overflow {
                behind: head - me.next,
            });
        }
        let start = (me.next - log.base) as usize;
        let mut single: Option<Bytes> = None;
        let mut batch: Option<BytesMut> = None;
        let mut count = 0;
        for entry in log.entries.range(start..) {
            me.next += 1;
            if !me.wants(entry) {
                continue;
            }
            count += 1;
            let frame = match &me.seen {
                None => entry.frame.clone(),
                Some(seen) => entry.frame_covering(seen),
            };
            match (&mut single, &mut batch) {
                (None, None) => single = Some(frame),
                (Some(first), None) => {
                    let mut buf = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 8));
                    buf.extend_from_slice(first);
                    buf.extend_from_slice(&frame);
                    batch = Some(buf);
                }
                (_, Some(buf)) => buf.extend_from_slice(&frame),
            }
            if batch.as_ref().is_some_and(|b| b.len() >= MAX_BATCH_BYTES) {
                break;
            }
        }
        let caught_up = me.next == head;
        match end_poll(me, caught_up, &log.frontier, count, shared, cx) {
            Ending::Sent => Poll::Ready(Next::Data(match batch {
                Some(buf) => buf.freeze(),
                None => single.unwrap_or_default(),
            })),
            Ending::KeepAlive => Poll::Ready(Next::Data(Bytes::from_static(KEEP_ALIVE))),
            Ending::Parked => Poll::Pending,
        }
    }

    /// Like [`Subscription::poll_next`], for a stream of several channels that
    /// frames events itself: the entries for this subscriber (up to about
    /// `max_bytes` of frames) are added to `out`, and `seen` is set to what their
    /// ids must also cover while the subscriber is ahead of this node. Never writes
    /// to a sink (a stream of several channels attaches none).
    pub(super) fn poll_entries(
        &mut self,
        cx: &mut Context<'_>,
        max_bytes: usize,
        out: &mut Vec<Arc<Entry>>,
        seen: &mut Option<Frontier>,
    ) -> Poll<Polled> {
        let shared = &self.broker.shared;
        let buffer = shared.settings.subscriber_buffer as u64;
        let mut guard = self.channel.log();
        let log = &mut *guard;
        let head = log.head();
        let Some(me) = log.subscribers.get_mut(&self.id) else {
            return Poll::Ready(Polled::Closed);
        };
        me.mode = Mode::Running;
        if shared.closing.load(Relaxed) {
            return Poll::Ready(Polled::Closed);
        }
        if me.next < log.base || head - me.next > buffer {
            // Counted by the caller, which may send what it has first.
            return Poll::Ready(Polled::Overflow {
                behind: head - me.next,
            });
        }
        *seen = me.seen.as_deref().cloned();
        let start = (me.next - log.base) as usize;
        let (mut count, mut bytes) = (0, 0);
        for entry in log.entries.range(start..) {
            me.next += 1;
            if !me.wants(entry) {
                continue;
            }
            count += 1;
            bytes += entry.frame.len();
            out.push(entry.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        let caught_up = me.next == head;
        match end_poll(me, caught_up, &log.frontier, count, shared, cx) {
            Ending::Sent => Poll::Ready(Polled::Entries),
            Ending::KeepAlive => Poll::Ready(Polled::KeepAlive),
            Ending::Parked => Poll::Pending,
        }
    }

    /// Takes this subscriber's socket back from appends for good (to end the stream
    /// with bytes of the task's own): `Pending` while an append is writing to it, then
    /// the part of a frame the task must write first, if any.
    pub fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut log = self.channel.log();
        let Some(me) = log.subscribers.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if me.being_written(cx) {
            return Poll::Pending;
        }
        me.mode = Mode::Running;
        me.sink = None;
        Poll::Ready(me.carry.take())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.channel, self.id);
    }
}

/// How a poll of a subscriber's entries ends.
enum Ending {
    /// It took entries for the subscriber (counted as delivered).
    Sent,
    /// It took none, and the subscriber is due a keep-alive comment.
    KeepAlive,
    /// It took none: the subscriber waits with `cx`'s waker.
    Parked,
}

/// The end of a poll that took `count` entries for `me`, having looked at every
/// entry up to the head if `caught_up`. Once it has, and this node's `frontier`
/// covers what the subscriber had seen elsewhere, its ids need no longer cover
/// that.
#[inline]
fn end_poll(
    me: &mut Subscriber,
    caught_up: bool,
    frontier: &Frontier,
    count: u64,
    shared: &Shared,
    cx: &Context<'_>,
) -> Ending {
    if caught_up && me.seen.as_ref().is_some_and(|s| frontier.covers(s)) {
        me.seen = None;
    }
    if count > 0 {
        me.keep_alive_due = false;
        me.last_sent_ms = shared.clock.now_ms();
        shared.metrics.events_delivered.fetch_add(count, Relaxed);
        return Ending::Sent;
    }
    if std::mem::take(&mut me.keep_alive_due) {
        me.last_sent_ms = shared.clock.now_ms();
        return Ending::KeepAlive;
    }
    me.mode = Mode::Parked(cx.waker().clone());
    Ending::Parked
}
