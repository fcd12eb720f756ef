//! A stream of several channels (`GET /channel/news,sport,weather`).
//!
//! It is one ordinary subscription per channel, each registered in its channel's
//! log like any other subscriber (so lifecycle, `/status`, client targeting and the
//! slow-subscriber bound work unchanged), polled in turn by one task. Each event is
//! framed again for the stream: its data wrapped as `{"channel":..,"data":..}` (its
//! `event:` and `retry:` kept), and its `id:` the stream's cursor.
//!
//! The cursor keeps one [`Cursor`] per channel (see `multi_cursor` for the design and
//! the text form): after an event of channel `c`, `c`'s part is exactly the id a
//! stream of `c` alone would have given that event, and the other parts are what
//! the stream delivered of their channels so far. A resume opens each channel from
//! its own part through [`Broker::open`], the single-channel resume, so it is exact
//! on any node for the same reasons, every part passes the forged-cursor checks, and
//! a channel whose history cannot vouch for its part gets a `reset` of its own.
//!
//! A pattern in the set (`orders.*`) is a part of its own, read from the pattern's
//! feed rather than from a channel, with one cursor across its channels (see
//! `pattern`).
//!
//! Cost: the frames are made per event per subscriber (the id differs for each), a
//! copy of the event and a cursor of all the channels; a stream of several channels
//! is woken for each event rather than written to by the publisher. Streams of one
//! channel are untouched.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{encode_event, encode_id_only, Cursor, KEEP_ALIVE};

use super::channel::Entry;
use super::multi_cursor;
use super::pattern::{pattern_prefix, PatternReader};
use super::stream::{Polled, MAX_BATCH_BYTES};
use super::subscribe::{Opening, RESET_DATA};
use super::{Broker, Next, Resume, SubscribeError, Subscription};

/// A stream of several channels. Dropping it unsubscribes from each.
#[derive(Debug)]
pub struct MultiSubscription {
    /// One subscription per channel or pattern, in the order of their names.
    parts: Vec<Part>,
    /// Each channel's cursor: what this stream delivered of it.
    cursors: Vec<Cursor>,
    /// The digest of the set of channels (see `multi_cursor`).
    set: u32,
    /// The channel polled first next time, for fairness.
    start: usize,
    preamble: Option<Bytes>,
    /// The channel the stream fell behind on, once it has.
    overflowed: Option<usize>,
    /// Entries taken from a channel, to frame after its lock is released.
    scratch: Vec<Arc<Entry>>,
    /// The same for a pattern, with each entry's channel.
    pattern_scratch: Vec<(Arc<str>, Arc<Entry>)>,
    /// When this stream last sent anything (ms). Each part keeps its own time for
    /// the keep-alive sweep, which would otherwise find a part silent while the
    /// stream was busy with another, or mark the parts of one quiet stream in
    /// turn and send it a comment for each.
    last_sent_ms: u64,
}

/// One named part of a stream: a channel, or a pattern (see `pattern`).
#[derive(Debug)]
enum Part {
    Channel(Subscription),
    Pattern(PatternReader),
}

impl Part {
    fn name(&self) -> &str {
        match self {
            Part::Channel(subscription) => subscription.channel(),
            Part::Pattern(reader) => reader.pattern(),
        }
    }

    fn client(&self) -> &Arc<str> {
        match self {
            Part::Channel(subscription) => &subscription.client,
            Part::Pattern(reader) => &reader.client,
        }
    }
}

/// How one part of a stream opens: its reset, its replay, the cursor it holds
/// during the replay and the one after it.
struct PartOpening {
    reset: bool,
    replay: Vec<(Arc<str>, Arc<Entry>)>,
    held: Cursor,
    opening: Cursor,
}

/// Why a stream of several channels could not open, and on which channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManySubscribeError {
    pub channel: String,
    pub error: SubscribeError,
}

/// How often a stream retries with another assigned client id that another
/// connection holds on one of its channels (practically never needed).
const ASSIGN_ATTEMPTS: usize = 4;

impl Broker {
    /// Opens one stream of several `channels` (distinct, validated names; a name may
    /// be a pattern, see [`pattern_prefix`]), resuming
    /// each from its part of `last_event_id` when that is a cursor of a stream of
    /// the same set. Every channel gets the same client id: `client`, or one
    /// assigned here.
    pub fn subscribe_many(
        &self,
        channels: &[&str],
        client: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<MultiSubscription, ManySubscribeError> {
        let mut names: Vec<&str> = channels.to_vec();
        names.sort_unstable();
        let set = multi_cursor::set_digest(&names);
        // An id that is not this set's cursor resumes nothing: every channel resets.
        let resume: Option<Vec<Cursor>> = last_event_id
            .map(|text| multi_cursor::parse(text, set, names.len()).unwrap_or_default());
        let mut attempt = 0;
        loop {
            match self.open_many(&names, client, resume.as_deref(), set) {
                Err(ManySubscribeError {
                    error: SubscribeError::ClientTaken,
                    ..
                }) if client.is_none() && attempt + 1 < ASSIGN_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    /// One attempt of [`Broker::subscribe_many`]; `resume` is `None` for a new
    /// stream, empty for an id that is not this set's cursor.
    fn open_many(
        &self,
        names: &[&str],
        client: Option<&str>,
        resume: Option<&[Cursor]>,
        set: u32,
    ) -> Result<MultiSubscription, ManySubscribeError> {
        let mut parts = Vec::with_capacity(names.len());
        let mut openings = Vec::with_capacity(names.len());
        let mut client: Option<Arc<str>> = client.map(Arc::from);
        for (i, name) in names.iter().enumerate() {
            let from = resume.map(|cursors| match cursors.get(i) {
                Some(cursor) => Resume::From(cursor),
                None => Resume::Unknown,
            });
            let failed = |error| ManySubscribeError {
                channel: name.to_string(),
                error,
            };
            if let Some(prefix) = pattern_prefix(name) {
                let opened = self
                    .open_pattern(prefix, client.as_deref(), from.unwrap_or(Resume::Live))
                    .map_err(failed)?;
                client.get_or_insert_with(|| opened.reader.client.clone());
                let held = match from {
                    Some(Resume::From(cursor)) => cursor.clone(),
                    _ => opened.cursor.clone(),
                };
                openings.push(PartOpening {
                    reset: opened.reset,
                    replay: opened.replay,
                    held,
                    opening: opened.cursor,
                });
                parts.push(Part::Pattern(opened.reader));
                continue;
            }
            let mut reset = false;
            let mut replay = Vec::new();
            let opened = self
                .open(
                    name,
                    client.as_deref(),
                    from.unwrap_or(Resume::Live),
                    &mut |opening| match opening {
                        Opening::Reset => reset = true,
                        // The stream's own cursors cover the resume cursor (below).
                        Opening::Replay(entry, _) => replay.push(entry.clone()),
                    },
                )
                .map_err(failed)?;
            client.get_or_insert_with(|| opened.subscription.client.clone());
            let held = match from {
                Some(Resume::From(cursor)) if !replay.is_empty() => cursor.clone(),
                _ => opened.cursor.clone(),
            };
            let channel = opened.subscription.channel.name.clone();
            openings.push(PartOpening {
                reset,
                replay: replay.into_iter().map(|e| (channel.clone(), e)).collect(),
                held,
                opening: opened.cursor,
            });
            parts.push(Part::Channel(opened.subscription));
        }
        let mut stream = MultiSubscription {
            cursors: openings.iter().map(|o| o.held.clone()).collect(),
            parts,
            set,
            start: 0,
            preamble: None,
            overflowed: None,
            scratch: Vec::new(),
            pattern_scratch: Vec::new(),
            last_sent_ms: self.shared.clock.now_ms(),
        };
        // Each channel's reset and replay in turn; the client's cursor after each
        // replayed event covers what its resume cursor already had.
        let mut preamble = BytesMut::new();
        for (i, part) in openings.into_iter().enumerate() {
            if part.reset {
                let data = wrap_data(stream.parts[i].name(), RESET_DATA);
                preamble.extend_from_slice(&encode_event(None, Some("reset"), None, &data));
            }
            for (channel, entry) in &part.replay {
                if let Part::Pattern(_) = stream.parts[i] {
                    stream.frame_pattern(&mut preamble, i, channel, entry);
                    continue;
                }
                let mut cursor = Cursor::parse(&entry.cursor).unwrap_or_default();
                for (origin, seq) in part.held.frontier.iter() {
                    cursor.frontier.advance(origin, seq);
                }
                stream.cursors[i] = cursor;
                stream.frame(&mut preamble, i, entry);
            }
            stream.cursors[i] = part.opening;
        }
        let id = multi_cursor::encode(set, &stream.cursors);
        preamble.extend_from_slice(&encode_id_only(&id));
        stream.preamble = Some(preamble.freeze());
        Ok(stream)
    }
}

impl MultiSubscription {
    pub fn client_id(&self) -> &str {
        self.parts.first().map_or("", |part| part.client())
    }

    /// The channels and patterns, in the order of their names.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(Part::name)
    }

    /// The channel or pattern the stream fell too far behind on (after
    /// [`Next::Overflow`]).
    pub fn overflowed_channel(&self) -> Option<&str> {
        self.overflowed.map(|i| self.parts[i].name())
    }

    /// The first bytes of the stream: each channel's reset and replayed events, then
    /// the cursor.
    pub fn take_preamble(&mut self) -> Option<Bytes> {
        self.preamble.take()
    }

    /// Waits for the next events of any channel.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next bytes for the stream, from every channel in turn; `Pending` with
    /// the waker left with each channel.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let count = self.parts.len();
        let first = self.start;
        self.start = (self.start + 1) % count.max(1);
        let mut out = BytesMut::new();
        let mut keep_alive = false;
        let mut skipped = false;
        for k in 0..count {
            let i = (first + k) % count;
            let mut seen = None;
            let room = MAX_BATCH_BYTES.saturating_sub(out.len()).max(1);
            let mut scratch = std::mem::take(&mut self.scratch);
            let mut pattern_scratch = std::mem::take(&mut self.pattern_scratch);
            let polled = match &mut self.parts[i] {
                Part::Channel(part) => part.poll_entries(cx, room, &mut scratch, &mut seen),
                Part::Pattern(part) => part.poll_entries(cx, room, &mut pattern_scratch),
            };
            let before = out.len();
            for (channel, entry) in pattern_scratch.drain(..) {
                self.frame_pattern(&mut out, i, &channel, &entry);
            }
            // Entries the pattern's cursor already covered: the part left no waker,
            // so look again rather than wait.
            skipped |= polled == Poll::Ready(Polled::Entries) && out.len() == before;
            self.pattern_scratch = pattern_scratch;
            match polled {
                Poll::Pending => {}
                Poll::Ready(Polled::KeepAlive) => keep_alive = true,
                Poll::Ready(Polled::Closed) => return Poll::Ready(Next::Closed),
                // What this poll already took goes out first; the overflow stays
                // and ends the stream at the next poll.
                Poll::Ready(Polled::Overflow { .. }) if !out.is_empty() => {
                    self.scratch = scratch;
                    break;
                }
                Poll::Ready(Polled::Overflow { behind }) => {
                    let metrics = &self.broker().shared.metrics;
                    metrics.slow_subscriber_disconnects.fetch_add(1, Relaxed);
                    self.overflowed = Some(i);
                    return Poll::Ready(Next::Overflow { behind });
                }
                Poll::Ready(Polled::Entries) => {
                    for entry in scratch.drain(..) {
                        let mut cursor = Cursor::parse(&entry.cursor).unwrap_or_default();
                        // Ahead of this node: the ids also cover what it saw elsewhere.
                        for (origin, seq) in seen.iter().flat_map(|s| s.iter()) {
                            cursor.frontier.advance(origin, seq);
                        }
                        self.cursors[i] = cursor;
                        self.frame(&mut out, i, &entry);
                    }
                }
            }
            scratch.clear();
            self.scratch = scratch;
            if out.len() >= MAX_BATCH_BYTES {
                break;
            }
        }
        let shared = &self.broker().shared;
        let (now, silent_since) = (
            shared.clock.now_ms(),
            shared.keep_alive_silent_since_ms.load(Relaxed),
        );
        if !out.is_empty() {
            self.last_sent_ms = now;
            return Poll::Ready(Next::Data(out.freeze()));
        }
        if keep_alive {
            if self.last_sent_ms <= silent_since {
                self.last_sent_ms = now;
                return Poll::Ready(Next::Data(Bytes::from_static(KEEP_ALIVE)));
            }
            // Not silent after all: the part that asked left no waker, so look again
            // and park.
            skipped = true;
        }
        if skipped {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Appends `entry` of channel `i`, framed for this stream with its cursor now.
    fn frame(&self, out: &mut BytesMut, i: usize, entry: &Entry) {
        let id = multi_cursor::encode(self.set, &self.cursors);
        wrap_frame(out, &id, self.parts[i].name(), &entry.frame);
    }

    /// Appends `entry` of `channel`, which pattern `i` matches, unless the pattern's
    /// cursor already covers it (see `pattern`): each origin's events reach a node
    /// in sequence order, so one at or below the cursor was delivered before, or
    /// seen through another node.
    fn frame_pattern(&mut self, out: &mut BytesMut, i: usize, channel: &str, entry: &Entry) {
        let cursor = &mut self.cursors[i];
        if entry.seq <= cursor.frontier.get(entry.origin) {
            return;
        }
        cursor.frontier.advance(entry.origin, entry.seq);
        cursor.time_ms = cursor.time_ms.max(entry.id_ms);
        let metrics = &self.broker().shared.metrics;
        metrics.events_delivered.fetch_add(1, Relaxed);
        let id = multi_cursor::encode(self.set, &self.cursors);
        wrap_frame(out, &id, channel, &entry.frame);
    }

    fn broker(&self) -> &Broker {
        match &self.parts[0] {
            Part::Channel(subscription) => &subscription.broker,
            Part::Pattern(reader) => &reader.broker,
        }
    }
}

/// `{"channel":"<channel>","data":<data>}`. Channel names need no JSON escaping
/// (they are checked: letters, digits and `-_.:~@`).
pub fn wrap_data(channel: &str, data: &str) -> String {
    format!(r#"{{"channel":"{channel}","data":{data}}}"#)
}

/// Appends `frame` (an event as its channel encoded it: `id:`, any `event:` and
/// `retry:`, then one `data:` line) with the id `id` and its data wrapped with the
/// channel's name.
fn wrap_frame(out: &mut BytesMut, id: &str, channel: &str, frame: &[u8]) {
    out.reserve(frame.len() + id.len() + channel.len() + 32);
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    for line in frame.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if line.starts_with(b"id: ") {
            continue;
        }
        match line.strip_prefix(b"data: ") {
            Some(data) => {
                out.put_slice(b"data: {\"channel\":\"");
                out.put_slice(channel.as_bytes());
                out.put_slice(b"\",\"data\":");
                out.put_slice(data);
                out.put_slice(b"}\n");
            }
            None => {
                out.put_slice(line);
                out.put_u8(b'\n');
            }
        }
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_wrapped_with_their_channel_and_keep_event_and_retry() {
        let frame = encode_event(Some("5~a.1"), Some("ping"), Some(300), r#"{"t":1}"#);
        let mut out = BytesMut::new();
        wrap_frame(&mut out, "m1_5_a_.1", "news", &frame);
        assert_eq!(
            &out[..],
            b"id: m1_5_a_.1\nevent: ping\nretry: 300\ndata: {\"channel\":\"news\",\"data\":{\"t\":1}}\n\n"
        );
        let plain = encode_event(Some("5"), None, None, r#""data: x""#);
        let mut out = BytesMut::new();
        wrap_frame(&mut out, "i", "a", &plain);
        assert_eq!(
            &out[..],
            b"id: i\ndata: {\"channel\":\"a\",\"data\":\"data: x\"}\n\n"
        );
    }
}
