//! The relay's wire format, in one place: how an accepted event becomes a relay
//! frame (once per event, whatever the number of peers), how a response body is
//! framed (sealed per stream when the cluster has a key), and how a puller splits
//! and decodes it (once per frame, into a typed event for the broker).
//!
//! A relay body is a sequence of frames, each a 4-byte big-endian length and that
//! many bytes: the JSON payload, or with a cluster key that payload sealed
//! (`crypto::frames`). The payloads (`PROTOCOL.md`, "The relay stream"):
//!
//! ```text
//! {"event":{"seq":7,"route":{"channel":"news"},"publish":{"data":…,"id":"k1"}}}
//! {"event":{"seq":8,"route":{"client":{"channel":"room","client":"alice"}},"publish":…}}
//! {"event":{"seq":9,"route":"all","publish":{"data":…,"event":"note","retry":500}}}
//! {"gap":{"upto":41}}
//! {"tick":1732358400123}
//! "ping"
//! ```
//!
//! A `tick` (sent only to a puller that asked for them) carries the serving node's
//! clock, read before it read its outbox: every event it accepted before that time
//! came earlier in the stream (`broker::watermark` says what ids make of it).
//!
//! `publish` holds the fields of a publish body (`data` compact, then `id`, `event`
//! and `retry` when set), which the receiver checks as the HTTP API checks a publish.

use std::borrow::Cow;
use std::io::Write;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::crypto::FrameSealer;
use crate::broker::{Accepted, Route};
use crate::event::{validate_name, Publish, PublishFields};

/// Largest frame accepted from a peer (a publish body is far smaller).
const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Bytes of a frame's length prefix.
const LEN: usize = 4;

/// One accepted event as a whole unsealed frame (length prefix and payload), made
/// once by [`encode_event`] and shared by every peer's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedEvent(Bytes);

impl EncodedEvent {
    /// The JSON payload, without the length prefix: what a sealed stream seals.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.0[LEN..]
    }

    /// The frame as a stream without a key sends it.
    pub(crate) fn frame(&self) -> &Bytes {
        &self.0
    }
}

#[cfg(test)]
thread_local! {
    /// Events this thread encoded: the tests hold it to one per accepted event.
    pub(crate) static ENCODED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Encodes one accepted event as its relay frame. The one place a relayed event is
/// encoded; the outbox calls it once per event.
pub(crate) fn encode_event(event: Accepted<'_>) -> EncodedEvent {
    #[cfg(test)]
    ENCODED.with(|n| n.set(n.get() + 1));
    let publish = event.publish;
    let names = match event.route {
        Route::Channel(channel) => channel.len(),
        Route::Client { channel, client } => channel.len() + client.len(),
        Route::All => 0,
    };
    let labels =
        publish.id.as_ref().map_or(0, String::len) + publish.event.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(LEN + 128 + names + labels + publish.data.len());
    out.extend_from_slice(&[0; LEN]);
    // Writes to a Vec do not fail.
    let _ = write!(out, r#"{{"event":{{"seq":{},"route":"#, event.seq);
    match event.route {
        Route::Channel(channel) => {
            out.extend_from_slice(br#"{"channel":"#);
            put_str(&mut out, channel);
            out.push(b'}');
        }
        Route::Client { channel, client } => {
            out.extend_from_slice(br#"{"client":{"channel":"#);
            put_str(&mut out, channel);
            out.extend_from_slice(br#","client":"#);
            put_str(&mut out, client);
            out.extend_from_slice(b"}}");
        }
        Route::All => out.extend_from_slice(br#""all""#),
    }
    out.extend_from_slice(br#","publish":{"data":"#);
    out.extend_from_slice(publish.data.as_bytes());
    if let Some(id) = &publish.id {
        out.extend_from_slice(br#","id":"#);
        put_str(&mut out, id);
    }
    if let Some(name) = &publish.event {
        out.extend_from_slice(br#","event":"#);
        put_str(&mut out, name);
    }
    if let Some(retry) = publish.retry {
        let _ = write!(out, r#","retry":{retry}"#);
    }
    out.extend_from_slice(b"}}}");
    let len = (out.len() - LEN) as u32;
    out[..LEN].copy_from_slice(&len.to_be_bytes());
    EncodedEvent(Bytes::from(out))
}

/// A JSON string, escaped as serde_json escapes it.
fn put_str(out: &mut Vec<u8>, text: &str) {
    // Serializing a str into a Vec does not fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Frames one relay response: every frame sealed in turn when the stream has a
/// sealer (the cluster has a key), as encoded otherwise.
#[derive(Debug)]
pub(crate) struct Framer {
    sealer: Option<FrameSealer>,
}

impl Framer {
    pub(crate) fn new(sealer: Option<FrameSealer>) -> Framer {
        Framer { sealer }
    }

    /// The frames of `events`, in order, as one chunk of the body.
    pub(crate) fn events(&mut self, events: &[EncodedEvent]) -> Bytes {
        match (&mut self.sealer, events) {
            (None, [one]) => one.frame().clone(),
            (None, _) => {
                let len = events.iter().map(|e| e.frame().len()).sum();
                let mut out = BytesMut::with_capacity(len);
                for event in events {
                    out.put_slice(event.frame());
                }
                out.freeze()
            }
            (Some(sealer), _) => {
                let mut out = BytesMut::new();
                for event in events {
                    put_frame(&mut out, &sealer.seal(event.payload()));
                }
                out.freeze()
            }
        }
    }

    /// A gap frame: events up to and including `upto` are gone.
    pub(crate) fn gap(&mut self, upto: u64) -> Bytes {
        self.one(format!(r#"{{"gap":{{"upto":{upto}}}}}"#).as_bytes())
    }

    /// A tick frame: every event accepted before `ms` (this node's clock) was sent.
    pub(crate) fn tick(&mut self, ms: u64) -> Bytes {
        self.one(format!(r#"{{"tick":{ms}}}"#).as_bytes())
    }

    /// A ping frame, which keeps a quiet stream alive.
    pub(crate) fn ping(&mut self) -> Bytes {
        self.one(br#""ping""#)
    }

    fn one(&mut self, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        match &mut self.sealer {
            Some(sealer) => put_frame(&mut out, &sealer.seal(payload)),
            None => put_frame(&mut out, payload),
        }
        out.freeze()
    }
}

fn put_frame(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(LEN + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
}

/// Splits a relay body into frames: a 4-byte big-endian length, then that many bytes.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    pub(crate) fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame; `Ok(None)` until more bytes arrive.
    pub(crate) fn next_frame(&mut self) -> Result<Option<BytesMut>, String> {
        if self.buf.len() < LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes is too large"));
        }
        if self.buf.len() < LEN + len {
            return Ok(None);
        }
        self.buf.advance(LEN);
        Ok(Some(self.buf.split_to(len)))
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One decoded frame payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Frame<'a> {
    Event(#[serde(borrow)] WireEvent<'a>),
    /// The peer's events up to and including `upto` are gone.
    Gap {
        upto: u64,
    },
    /// The peer's events accepted before this time (ms, its clock) were all sent.
    Tick(u64),
    Ping,
}

/// An event another node accepted, read but not yet checked: the puller looks at
/// its sequence first (a duplicate is dropped unread), then [`WireEvent::check`]s it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireEvent<'a> {
    pub(crate) seq: u64,
    #[serde(borrow)]
    route: WireRoute<'a>,
    #[serde(borrow)]
    publish: PublishFields<'a>,
}

/// A route's names borrow from the frame unless they hold JSON escapes.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireRoute<'a> {
    Channel(#[serde(borrow)] Cow<'a, str>),
    Client {
        #[serde(borrow)]
        channel: Cow<'a, str>,
        #[serde(borrow)]
        client: Cow<'a, str>,
    },
    All,
}

impl<'a> WireEvent<'a> {
    /// Checks the event's names and publish as the HTTP API checks them.
    pub(crate) fn check(self) -> Result<RemoteEvent<'a>, String> {
        match &self.route {
            WireRoute::All => {}
            WireRoute::Channel(channel) => validate_name("channel", channel).map_err(|e| e.0)?,
            WireRoute::Client { channel, client } => {
                validate_name("channel", channel).map_err(|e| e.0)?;
                validate_name("client", client).map_err(|e| e.0)?;
            }
        }
        Ok(RemoteEvent {
            seq: self.seq,
            publish: self.publish.check().map_err(|e| e.0)?,
            route: self.route,
        })
    }
}

/// An event another node accepted, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RemoteEvent<'a> {
    seq: u64,
    route: WireRoute<'a>,
    publish: Publish,
}

impl RemoteEvent<'_> {
    /// The event as the broker takes it.
    pub(crate) fn accepted(&self) -> Accepted<'_> {
        let route = match &self.route {
            WireRoute::Channel(channel) => Route::Channel(channel),
            WireRoute::Client { channel, client } => Route::Client { channel, client },
            WireRoute::All => Route::All,
        };
        Accepted {
            seq: self.seq,
            route,
            publish: &self.publish,
        }
    }
}

/// Decodes one frame payload (opened, when the stream is sealed), in one pass over
/// its JSON.
pub(crate) fn decode(payload: &[u8]) -> Result<Frame<'_>, String> {
    serde_json::from_slice(payload).map_err(|e| format!("bad relay frame: {e}"))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
