//! Events, names and cursors, and their encoding on the SSE wire.
//!
//! Everything here is pure: validation of untrusted input happens once, at the
//! edge, and produces types that can no longer break SSE framing.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Identity of the process that accepted an event: a node and its generation.
/// A restarted node is a new origin, so its sequence may start again at 1.
pub type Origin = u64;

/// Longest accepted channel or client name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted event name or publisher id.
pub const MAX_LABEL_LEN: usize = 256;
/// Most origins a cursor may name (it grows with node restarts inside the window).
pub const MAX_CURSOR_ORIGINS: usize = 64;

/// Why a piece of client input was refused; rendered into the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}

/// Checks a channel or client name: 1 to 128 characters from `A-Z a-z 0-9 - _ . : ~ @`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{kind} name must be 1 to {MAX_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:~@".contains(*c)))
    {
        return Err(invalid(format!(
            "{kind} name may only contain letters, digits and - _ . : ~ @ (found {bad:?})"
        )));
    }
    Ok(())
}

/// Checks an event name or publisher id: printable, with no line breaks of any kind.
pub fn validate_label(field: &str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() || value.len() > MAX_LABEL_LEN {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_LABEL_LEN} bytes, got {}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
    {
        return Err(invalid(format!(
            "{field} must not contain control characters or line separators (found {bad:?})"
        )));
    }
    Ok(())
}

/// The fields of a publish as JSON carries them (a publish body, or the `publish`
/// of a relayed event), before they are checked: [`PublishFields::check`] makes the
/// [`Publish`]. `data` is borrowed from the input, so it is read once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishFields<'a> {
    id: Option<String>,
    event: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    retry: Option<u64>,
}

/// A validated publish: safe to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The publisher's idempotency key, if it sent one.
    pub id: Option<String>,
    /// SSE event name (`event:` line).
    pub event: Option<String>,
    /// Compact JSON text of `data`: no line breaks, so one `data:` line.
    pub data: String,
    /// Reconnection delay to advertise with this event, in milliseconds.
    pub retry: Option<u64>,
}

impl Publish {
    /// Parses and validates a publish body.
    pub fn from_json(body: &[u8]) -> Result<Publish, InvalidInput> {
        let fields: PublishFields<'_> =
            serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON body: {e}")))?;
        fields.check()
    }
}

impl PublishFields<'_> {
    /// Validates the fields into a [`Publish`] (`data` checked and made compact).
    pub fn check(self) -> Result<Publish, InvalidInput> {
        if let Some(id) = &self.id {
            validate_label("id", id)?;
        }
        if let Some(event) = &self.event {
            validate_label("event", event)?;
            if RESERVED_EVENTS.contains(&event.as_str()) {
                return Err(invalid(format!(
                    "event name {event:?} is reserved: the broker itself sends {}",
                    RESERVED_EVENTS.join(", ")
                )));
            }
        }
        if let Some(retry) = self.retry {
            if retry > MAX_RETRY_MS {
                return Err(invalid(format!(
                    "retry must be at most {MAX_RETRY_MS} milliseconds, got {retry}"
                )));
            }
        }
        Ok(Publish {
            data: check_and_compact_data(self.data.get())?,
            id: self.id,
            event: self.event,
            retry: self.retry,
        })
    }
}

/// Deepest nesting of arrays and objects accepted in `data`: what serde_json (Rust's
/// common strict decoder) reads by default, so every subscriber's decoder can.
pub const MAX_DATA_DEPTH: usize = 127;
/// Longest number accepted in `data`, in characters. Past 17 significant digits a
/// double holds no more precision (RFC 7493: I-JSON numbers are doubles).
pub const MAX_NUMBER_LEN: usize = 100;
/// Largest `retry` a publisher may send, in milliseconds (ten minutes): longer waits
/// leave a browser that lost its connection silent for what looks like for ever.
pub const MAX_RETRY_MS: u64 = 600_000;
/// Event names the broker itself sends on streams; a publisher may not use them, or
/// it could make pages reload (`reset`), think events were lost (`gap`), or stop
/// reconnecting (`expired`).
pub const RESERVED_EVENTS: [&str; 4] = ["reset", "gap", "overflow", "expired"];

/// Checks `data` (valid JSON text, as serde_json's `RawValue` holds it) and returns
/// it without insignificant whitespace, in one pass over its bytes. Keeps numbers and
/// strings byte for byte (no float rounding, unlike a parse and re-print).
///
/// Refuses what strict decoders on the subscriber's side (Rust's, Go's, Python's
/// with `surrogatepass` off) fail on, although the JSON grammar admits it (I-JSON,
/// RFC 7493, forbids or warns of each):
/// - `\uD800`-style escapes that do not form a surrogate pair (they encode no
///   Unicode character);
/// - arrays and objects nested more than [`MAX_DATA_DEPTH`] deep;
/// - numbers longer than [`MAX_NUMBER_LEN`] characters, or out of a double's range
///   (`1e400`).
///
/// The scan is byte-wise: every byte it acts on is ASCII, and ASCII bytes never
/// occur inside a multi-byte UTF-8 sequence, so each slice it copies starts and ends
/// on a character boundary.
fn check_and_compact_data(json: &str) -> Result<String, InvalidInput> {
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    // Start of the bytes not yet copied to `out`.
    let mut copied = 0;
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i + 1)?;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(invalid(format!(
                        "data nests arrays and objects more than {MAX_DATA_DEPTH} deep; \
                         strict JSON decoders refuse that"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.push_str(&json[copied..i]);
                copied = i + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while let Some(&b) = bytes.get(i) {
                    match b {
                        b'0'..=b'9' | b'-' | b'+' | b'.' => {}
                        b'e' | b'E' => exponent = true,
                        _ => break,
                    }
                    i += 1;
                }
                check_number(&json[start..i], exponent)?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&json[copied..]);
    Ok(out)
}

/// The index after the closing quote of the string whose contents start at `i`;
/// checks its `\u` escapes on the way.
fn string_end(bytes: &[u8], mut i: usize) -> Result<usize, InvalidInput> {
    // A `\uXXXX` escape's code unit at `at`, if there is one.
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if !hex.starts_with(b"\\u") {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    loop {
        // Most string bytes are neither: skip to the next quote or escape at once.
        match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
            Some(skip) => i += skip,
            None => return Ok(bytes.len()),
        }
        match bytes.get(i) {
            None => return Ok(i),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match unit(i) {
                // `\uXXXX` is six bytes, a surrogate pair twelve, others two.
                Some(0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => i += 12,
                Some(code @ 0xD800..=0xDFFF) => {
                    return Err(invalid(format!(
                        "data contains an unpaired surrogate escape \\u{code:04x}; \
                         JSON strings must encode Unicode characters (RFC 7493)"
                    )))
                }
                Some(_) => i += 6,
                None => i += 2,
            },
            Some(_) => i += 1,
        }
    }
}

/// Checks one number of `data` (valid JSON number text).
fn check_number(text: &str, exponent: bool) -> Result<(), InvalidInput> {
    if text.len() > MAX_NUMBER_LEN {
        return Err(invalid(format!(
            "data contains a number of {} characters; at most {MAX_NUMBER_LEN} are accepted \
             (a double holds about 17 significant digits)",
            text.len()
        )));
    }
    // Without an exponent, 100 characters stay far below a double's largest value
    // (about 1.8e308): only an exponent can leave its range.
    if exponent && !text.parse::<f64>().is_ok_and(f64::is_finite) {
        return Err(invalid(format!(
            "data contains the number {text}, which is out of a double's range; \
             strict JSON decoders refuse it"
        )));
    }
    Ok(())
}

/// Highest sequence seen per origin: the part of a cursor that says which events a
/// subscriber has had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier(BTreeMap<Origin, u64>);

impl Frontier {
    pub fn get(&self, origin: Origin) -> u64 {
        self.0.get(&origin).copied().unwrap_or(0)
    }

    /// Raises `origin` to `seq` (never lowers it).
    pub fn advance(&mut self, origin: Origin, seq: u64) {
        let entry = self.0.entry(origin).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// Whether every event at or below `other` is also at or below `self`.
    pub fn covers(&self, other: &Frontier) -> bool {
        other.0.iter().all(|(o, s)| self.get(*o) >= *s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Origin, u64)> + '_ {
        self.0.iter().map(|(o, s)| (*o, *s))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The SSE `id:` a subscriber gets: the channel's frontier on the node that served it,
/// and that node's wall time (ms) when the frontier was current.
///
/// Text form: `<time_ms>` followed by `~<origin hex>.<seq>` per origin, e.g.
/// `1732358400123~9f2c4e1a77d0b3e5.42`. Only `0-9 a-f . ~` appear, so it is safe in
/// headers, query strings and SSE lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: u64,
    pub frontier: Frontier,
}

impl Cursor {
    pub fn encode(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(14 + self.frontier.len() * 24);
        let _ = write!(out, "{}", self.time_ms);
        for (origin, seq) in self.frontier.iter() {
            let _ = write!(out, "~{origin:x}.{seq}");
        }
        out
    }

    /// Parses a `Last-Event-ID`. Anything not made by [`Cursor::encode`] is refused.
    pub fn parse(text: &str) -> Result<Cursor, InvalidInput> {
        let bad = || invalid("Last-Event-ID is not a cursor issued by this broker");
        if text.len() > 14 + MAX_CURSOR_ORIGINS * 40 {
            return Err(bad());
        }
        let mut parts = text.split('~');
        let time = parts.next().ok_or_else(bad)?;
        let time_ms = parse_decimal(time).ok_or_else(bad)?;
        let mut frontier = Frontier::default();
        for part in parts {
            let (origin, seq) = part.split_once('.').ok_or_else(bad)?;
            if origin.is_empty()
                || origin.len() > 16
                || !origin.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad());
            }
            let origin = u64::from_str_radix(origin, 16).map_err(|_| bad())?;
            let seq = parse_decimal(seq).ok_or_else(bad)?;
            if frontier.0.insert(origin, seq).is_some() || frontier.len() > MAX_CURSOR_ORIGINS {
                return Err(bad());
            }
        }
        Ok(Cursor { time_ms, frontier })
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Encodes one SSE event. The result is shared by every subscriber that receives it.
pub fn encode_event(
    id: Option<&str>,
    event: Option<&str>,
    retry: Option<u64>,
    data: &str,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 64 + id.map_or(0, str::len));
    if let Some(id) = id {
        put_field(&mut buf, "id", id);
    }
    if let Some(event) = event {
        put_field(&mut buf, "event", event);
    }
    if let Some(retry) = retry {
        put_field(&mut buf, "retry", &retry.to_string());
    }
    put_field(&mut buf, "data", data);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A block that only sets the client's last event id (dispatches no event).
pub fn encode_id_only(id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + 6);
    put_field(&mut buf, "id", id);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The first bytes of every stream: `retry:` so `onopen` fires at once.
pub fn encode_retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// Keep-alive comment.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    debug_assert!(!value.contains(['\n', '\r']), "validated before encoding");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_keeps_strings_and_numbers_exact() {
        assert_eq!(
            check_and_compact_data(
                "{ \"a\" : [1, 2.50, 123456789012345678901234567890],\n \"b\": \"x  y\\\" z\" }"
            )
            .unwrap(),
            "{\"a\":[1,2.50,123456789012345678901234567890],\"b\":\"x  y\\\" z\"}"
        );
        assert_eq!(check_and_compact_data("\"hello\"").unwrap(), "\"hello\"");
    }

    #[test]
    fn publish_rejects_line_breaks_in_labels() {
        for body in [
            r#"{"data":1,"event":"a\nb"}"#,
            r#"{"data":1,"event":"a\rb"}"#,
            r#"{"data":1,"id":"a\u0000b"}"#,
            r#"{"data":1,"id":"a\u2028b"}"#,
            r#"{"data":1,"event":""}"#,
        ] {
            assert!(Publish::from_json(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn publish_refuses_unpaired_surrogates_in_data() {
        for body in [
            r#"{"data":"\ud800"}"#,
            r#"{"data":"a\uDFFFb"}"#,
            r#"{"data":{"k":"\ud83d x"}}"#,
            r#"{"data":["\ude00\ud83d"]}"#,
            r#"{"data":"\\\ud800"}"#,
        ] {
            let err = Publish::from_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains("unpaired surrogate"), "{body}: {err}");
        }
        for body in [
            r#"{"data":"\ud83d\ude00 \u00e9 \\ud800 \\\\"}"#,
            r#"{"data":"\\u"}"#,
            r#"{"data":{"\ud83d\ude00":"\u0041"}}"#,
            r#"{"data":"plain"}"#,
        ] {
            let publish = Publish::from_json(body.as_bytes());
            assert!(publish.is_ok(), "{body}: {publish:?}");
        }
    }

    #[test]
    fn publish_refuses_broker_signal_names_and_unusable_retries() {
        for name in RESERVED_EVENTS {
            let body = format!(r#"{{"data":1,"event":"{name}"}}"#);
            let err = Publish::from_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains("reserved") && err.0.contains(name), "{err}");
        }
        // Names are case-sensitive in EventSource: these are not the broker's.
        for name in ["Reset", "gaps", "message"] {
            let body = format!(r#"{{"data":1,"event":"{name}"}}"#);
            assert!(Publish::from_json(body.as_bytes()).is_ok(), "{name}");
        }
        let body = format!(r#"{{"data":1,"retry":{MAX_RETRY_MS}}}"#);
        assert_eq!(
            Publish::from_json(body.as_bytes()).unwrap().retry,
            Some(MAX_RETRY_MS)
        );
        for retry in [MAX_RETRY_MS + 1, u64::MAX] {
            let body = format!(r#"{{"data":1,"retry":{retry}}}"#);
            let err = Publish::from_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains("retry") && err.0.contains("600000"), "{err}");
        }
    }

    #[test]
    fn data_nesting_is_bounded_where_strict_decoders_stop() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(MAX_DATA_DEPTH);
        // What is accepted, serde_json (default limits) decodes on the other side.
        serde_json::from_str::<serde_json::Value>(&deepest).expect("serde_json reads it");
        let body = format!(r#"{{"data":{deepest}}}"#);
        assert_eq!(Publish::from_json(body.as_bytes()).unwrap().data, deepest);
        let mixed = format!(
            "{}1{}",
            r#"{"a":["#.repeat(MAX_DATA_DEPTH / 2 + 1),
            "]}".repeat(MAX_DATA_DEPTH / 2 + 1)
        );
        for data in [nested(MAX_DATA_DEPTH + 1), nested(400_000), mixed] {
            assert!(serde_json::from_str::<serde_json::Value>(&data).is_err());
            let body = format!(r#"{{"data":{data}}}"#);
            let err = Publish::from_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains("127 deep"), "{err}");
        }
        // Brackets inside strings are text, not nesting.
        let text = format!(r#"{{"data":"{}"}}"#, "[{".repeat(1000));
        assert!(Publish::from_json(text.as_bytes()).is_ok());
    }

    #[test]
    fn data_numbers_are_bounded_in_length_and_range() {
        let longest = "9".repeat(MAX_NUMBER_LEN);
        for data in [
            longest.clone(),
            format!("-{}", &longest[1..]),
            "1e308".into(),
            "-1.5E+300".into(),
            "1e-400".into(),
            format!("[0.{}]", "1".repeat(MAX_NUMBER_LEN - 2)),
        ] {
            let body = format!(r#"{{"data":{data}}}"#);
            assert!(Publish::from_json(body.as_bytes()).is_ok(), "{data}");
            serde_json::from_str::<serde_json::Value>(&data).expect("serde_json reads it");
        }
        for (data, says) in [
            ("9".repeat(MAX_NUMBER_LEN + 1), "at most 100"),
            ("1".repeat(50_000), "at most 100"),
            (
                format!(r#"{{"k":[1,-0.{}]}}"#, "5".repeat(200)),
                "at most 100",
            ),
            ("1e400".into(), "out of a double's range"),
            ("[-2.5E+309]".into(), "out of a double's range"),
        ] {
            let body = format!(r#"{{"data":{data}}}"#);
            let err = Publish::from_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains(says), "{data}: {err}");
        }
        // Digits inside strings are text.
        let text = format!(r#"{{"data":"{}e999"}}"#, "1".repeat(1000));
        assert!(Publish::from_json(text.as_bytes()).is_ok());
    }

    #[test]
    fn publish_errors_say_what_is_wrong() {
        let err = Publish::from_json(br#"{"event":"x"}"#).unwrap_err();
        assert!(err.0.contains("missing field `data`"), "{err}");
        let err = Publish::from_json(br#"{"data":1,"retry":"soon"}"#).unwrap_err();
        assert!(
            err.0.contains("retry") || err.0.contains("invalid type"),
            "{err}"
        );
        let err = Publish::from_json(br#"{"data":1,"colour":"red"}"#).unwrap_err();
        assert!(err.0.contains("unknown field"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("channel", "news.eu-1:x~y@z_").is_ok());
        assert!(validate_name("channel", "").is_err());
        assert!(validate_name("channel", "a/b").is_err());
        assert!(validate_name("channel", "a b").is_err());
        assert!(validate_name("channel", &"x".repeat(129)).is_err());
        assert!(validate_name("channel", "é").is_err());
    }

    #[test]
    fn cursor_round_trips() {
        let mut frontier = Frontier::default();
        frontier.advance(0x9f2c_4e1a_77d0_b3e5, 42);
        frontier.advance(7, 1);
        let cursor = Cursor {
            time_ms: 1_732_358_400_123,
            frontier,
        };
        let text = cursor.encode();
        assert_eq!(text, "1732358400123~7.1~9f2c4e1a77d0b3e5.42");
        assert_eq!(Cursor::parse(&text), Ok(cursor));
        assert_eq!(Cursor::parse("5").unwrap().frontier, Frontier::default());
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for text in [
            "",
            "x",
            "1~",
            "1~a",
            "1~a.",
            "1~.3",
            "1~g.3",
            "1~a.1~a.2",
            "-1",
            "1~a.-3",
        ] {
            assert!(Cursor::parse(text).is_err(), "{text:?}");
        }
    }
}
