//! Properties of the decoders of untrusted input (issue 7): a publish either is
//! refused or reads back, through the client crate's WHATWG EventSource parser (which
//! shares nothing with the broker's encoder), as exactly the event that was published;
//! cursors round-trip; `Cursor::parse` never panics.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sse_cluster::event::{
    encode_event, Cursor, Frontier, Publish, MAX_CURSOR_ORIGINS, MAX_RETRY_MS, RESERVED_EVENTS,
};
use sse_cluster_client::{Event, Parser};

/// Characters that break or bend SSE framing, mixed with ordinary ones.
const TRICKY: &str =
    "[a-z :\\\\\"\r\n\u{0}\t\u{b}\u{c}\u{1b}\u{7f}\u{85}\u{2028}\u{2029}\u{feff}é😀]";

fn tricky_string(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::string::string_regex(&format!("{TRICKY}{{0,{max}}}")).unwrap(),
        1 => any::<String>(),
        // Around the 256-byte limit on labels.
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_string(16).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(tricky_string(8), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Whether the broker must accept this event name or id.
fn valid_label(label: &str) -> bool {
    (1..=256).contains(&label.len())
        && !label
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

#[derive(Debug, Clone)]
struct Body {
    data: Value,
    id: Option<String>,
    event: Option<String>,
    retry: Option<u64>,
    pretty: bool,
}

impl Body {
    fn json(&self) -> String {
        let mut body = Map::new();
        body.insert("data".into(), self.data.clone());
        if let Some(id) = &self.id {
            body.insert("id".into(), id.clone().into());
        }
        if let Some(event) = &self.event {
            body.insert("event".into(), event.clone().into());
        }
        if let Some(retry) = self.retry {
            body.insert("retry".into(), retry.into());
        }
        let body = Value::Object(body);
        if self.pretty {
            serde_json::to_string_pretty(&body).unwrap()
        } else {
            body.to_string()
        }
    }
}

fn body() -> impl Strategy<Value = Body> {
    (
        json_value(),
        proptest::option::of(tricky_string(12)),
        proptest::option::of(prop_oneof![
            8 => tricky_string(12),
            1 => proptest::sample::select(&RESERVED_EVENTS[..]).prop_map(str::to_owned),
        ]),
        proptest::option::of(prop_oneof![
            // Around the bound on `retry`, and anywhere.
            2 => (MAX_RETRY_MS - 2)..=(MAX_RETRY_MS + 2),
            1 => any::<u64>(),
        ]),
        any::<bool>(),
    )
        .prop_map(|(data, id, event, retry, pretty)| Body {
            data,
            id,
            event,
            retry,
            pretty,
        })
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (
        any::<u64>(),
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..=MAX_CURSOR_ORIGINS),
    )
        .prop_map(|(time_ms, entries)| {
            let mut frontier = Frontier::default();
            for (origin, seq) in entries {
                frontier.advance(origin, seq);
            }
            Cursor { time_ms, frontier }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn a_publish_is_refused_or_reads_back_as_exactly_one_identical_event(body in body()) {
        let text = body.json();
        let must_accept = body.id.as_deref().is_none_or(valid_label)
            && body
                .event
                .as_deref()
                .is_none_or(|event| valid_label(event) && !RESERVED_EVENTS.contains(&event))
            && body.retry.is_none_or(|retry| retry <= MAX_RETRY_MS);
        let publish = match Publish::from_json(text.as_bytes()) {
            Ok(publish) => publish,
            Err(error) => {
                prop_assert!(!must_accept, "valid publish refused ({error}): {text}");
                return Ok(());
            }
        };
        prop_assert!(
            must_accept,
            "accepted a label with a line break or control, a reserved name or a retry \
             out of bounds: {text:?}"
        );

        let wire = encode_event(
            publish.id.as_deref(),
            publish.event.as_deref(),
            publish.retry,
            &publish.data,
        );
        let mut parser = Parser::new();
        let events = parser.feed_to_vec(&wire);
        prop_assert_eq!(events.len(), 1, "{:?} -> {:?}", wire, events);
        prop_assert_eq!(parser.buffered(), 0, "nothing left undispatched: {:?}", wire);
        let compact = body.data.to_string();
        prop_assert_eq!(
            &events[0],
            &Event {
                event: body.event.clone().unwrap_or_else(|| "message".to_owned()),
                data: compact,
                id: body.id.clone().unwrap_or_default(),
            }
        );
        prop_assert_eq!(parser.retry(), body.retry);
        // One line a field (id, event, retry, data) and the blank line: nothing else,
        // no comment, no field split in two.
        let fields = 1 + usize::from(body.id.is_some())
            + usize::from(body.event.is_some())
            + usize::from(body.retry.is_some());
        prop_assert_eq!(line_ends(&wire), fields + 1, "no extra field or line: {:?}", wire);
    }

    #[test]
    fn a_cursor_parses_back_from_its_encoding(cursor in cursor()) {
        let text = cursor.encode();
        prop_assert!(text.bytes().all(|b| b"0123456789abcdef.~".contains(&b)), "{}", text);
        prop_assert_eq!(Cursor::parse(&text), Ok(cursor));
    }

    #[test]
    fn cursor_parse_never_panics_on_any_string(
        text in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F.~+ -]{0,64}",
            "[0-9]{1,24}(~[0-9a-f]{0,18}\\.[0-9]{0,22}){0,70}",
        ]
    ) {
        if let Ok(cursor) = Cursor::parse(&text) {
            prop_assert_eq!(Cursor::parse(&cursor.encode()), Ok(cursor));
        }
    }
}

/// Line ends in `wire` as EventSource counts them: CRLF, LF or CR.
fn line_ends(wire: &[u8]) -> usize {
    let crlf = wire.windows(2).filter(|pair| pair == b"\r\n").count();
    wire.iter().filter(|&&b| b == b'\n' || b == b'\r').count() - crlf
}

/// The parser itself follows the rules the properties rely on (so a lenient parser
/// cannot make them pass).
#[test]
fn the_client_parser_splits_on_every_line_ending() {
    let mut parser = Parser::new();
    let events =
        parser.feed_to_vec(b"data: a\rdata:b\r\ndata:  c\nevent: x\rid: 1\0\nretry\n\ndata: d");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.data, "a\nb\n c");
    assert_eq!(event.event, "x");
    assert_eq!(event.id, "", "an id with NUL is ignored");
    assert_eq!(parser.retry(), None, "a retry without digits is ignored");
    assert_eq!(
        parser.buffered(),
        "data: d".len(),
        "the unterminated line is held"
    );
    assert_eq!(line_ends(b"a\rb\r\nc\n\n"), 4);
    let two = Parser::new().feed_to_vec("data: 1\n\u{2028}data: 2\n\n".as_bytes());
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].data, "1", "U+2028 is not a line break");
}
