//! An incremental `text/event-stream` parser that follows the WHATWG EventSource
//! "interpret an event stream" algorithm.
//!
//! Bytes may be cut anywhere, also inside a CRLF or a UTF-8 sequence. Lines are split
//! on bytes: CR and LF are ASCII and never occur inside a UTF-8 sequence, and an
//! ASCII byte always ends a malformed one, so decoding each line on its own (invalid
//! sequences become U+FFFD) gives the same text as decoding the whole stream first.
//!
//! Events are handed to a callback as a borrowed [`EventRef`]: no allocation per event
//! once the buffers have grown to the stream's event size.

use std::borrow::Cow;

/// The UTF-8 byte order mark, stripped once from the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A dispatched event, borrowed from the parser's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

impl<'a> EventRef<'a> {
    /// The event type: the `event:` field, or `message` when there was none (or it
    /// was empty).
    pub fn event(&self) -> &'a str {
        if self.event.is_empty() {
            "message"
        } else {
            self.event
        }
    }

    /// Whether the event came without a name (a browser's `onmessage`).
    pub fn is_message(&self) -> bool {
        self.event.is_empty() || self.event == "message"
    }

    /// The `data` lines, joined with LF.
    pub fn data(&self) -> &'a str {
        self.data
    }

    /// The last event id when the event was dispatched (`lastEventId`): the latest
    /// `id:` of the stream, which need not be in this event's own block.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            event: self.event().to_owned(),
            data: self.data.to_owned(),
            id: self.id.to_owned(),
        }
    }
}

/// A dispatched event, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The event type; `message` for an event without a name.
    pub event: String,
    /// The `data` lines joined with LF.
    pub data: String,
    /// The last event id when it was dispatched.
    pub id: String,
}

/// The parser's state for one event source: buffers of the event being read, and the
/// last event id and reconnection time, which outlive connections.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    /// A line not yet ended by the input so far.
    line: Vec<u8>,
    /// The data buffer: each `data` value followed by LF, as the algorithm keeps it.
    data: String,
    event: String,
    /// The last event ID buffer when it differs from `last_event_id` (an `id:` since
    /// the last blank line, `id_pending`); otherwise the buffer is `last_event_id`
    /// itself, and this string is spare room, swapped in at the next blank line.
    id_buffer: String,
    id_pending: bool,
    last_event_id: String,
    retry: Option<u64>,
    /// Bytes of a BOM matched so far at the start of the stream.
    bom_matched: u8,
    /// The start of the stream is behind us: no BOM can follow.
    started: bool,
    /// The previous input ended in CR, so a leading LF belongs to that line end.
    after_cr: bool,
}

impl Parser {
    /// A parser for a new event source.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// A parser whose last event id is `id`, as after a reconnect with `Last-Event-ID`.
    pub fn with_last_event_id(id: &str) -> Parser {
        Parser {
            last_event_id: id.to_owned(),
            ..Parser::default()
        }
    }

    /// The last event id (what a reconnect sends as `Last-Event-ID`); empty if none.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time in milliseconds from the latest valid `retry:` field.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Bytes held for an event or line not yet complete: a caller that reads from an
    /// untrusted server can bound it.
    pub fn buffered(&self) -> usize {
        let id = if self.id_pending {
            self.id_buffer.len()
        } else {
            0
        };
        self.line.len() + self.data.len() + self.event.len() + id
    }

    /// Ends the current stream (its connection closed): an event not yet dispatched is
    /// dropped, and the next bytes are the start of a new stream (with its own BOM).
    /// The last event id and the reconnection time are kept.
    pub fn end_of_stream(&mut self) {
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.id_pending = false;
        self.bom_matched = 0;
        self.started = false;
        self.after_cr = false;
    }

    /// Feeds stream bytes, cut anywhere, and calls `on_event` for each event they
    /// complete.
    pub fn feed(&mut self, input: &[u8], mut on_event: impl FnMut(EventRef<'_>)) {
        let mut input = self.skip_bom(input);
        if input.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let mut next = end + 1;
            if input[end] == b'\r' {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.line(&input[..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..end]);
                self.line(&line, &mut on_event);
                line.clear();
                self.line = line;
            }
            input = &input[next..];
        }
        self.line.extend_from_slice(input);
    }

    /// Feeds stream bytes and returns the events they complete, owned.
    pub fn feed_to_vec(&mut self, input: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.feed(input, |event| events.push(event.to_event()));
        events
    }

    /// Drops a BOM at the start of the stream, also when it arrives in pieces.
    fn skip_bom<'a>(&mut self, mut input: &'a [u8]) -> &'a [u8] {
        while !self.started {
            let Some(&byte) = input.first() else {
                return input;
            };
            let matched = usize::from(self.bom_matched);
            if byte == BOM[matched] {
                input = &input[1..];
                self.bom_matched += 1;
                self.started = usize::from(self.bom_matched) == BOM.len();
            } else {
                // Not a BOM after all: what matched is text of the first line (no
                // line break can be among those bytes).
                self.line.extend_from_slice(&BOM[..matched]);
                self.started = true;
            }
        }
        input
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(EventRef<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&decode(value));
                self.data.push('\n');
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&decode(value));
            }
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&decode(value));
                self.id_pending = true;
            }
            b"retry" => {
                // Digits only; a number past u64 is ignored like any other bad value.
                if let Some(ms) = parse_digits(value) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(EventRef<'_>)) {
        if self.id_pending {
            std::mem::swap(&mut self.last_event_id, &mut self.id_buffer);
            self.id_pending = false;
        }
        if !self.data.is_empty() {
            on_event(EventRef {
                event: &self.event,
                data: &self.data[..self.data.len() - 1],
                id: &self.last_event_id,
            });
        }
        self.data.clear();
        self.event.clear();
    }
}

/// UTF-8 decoding with replacement: the validator's fast path for the common case
/// of valid text (`from_utf8_lossy` walks it byte by byte).
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A non-empty run of ASCII digits as a number, if it fits.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests;
