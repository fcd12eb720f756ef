//! Properties of the decoders of untrusted input (issue 7): a publish either is
//! refused or reads back, through an independent WHATWG EventSource parser, as exactly
//! the event that was published; cursors round-trip; `Cursor::parse` never panics.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sse_cluster::event::{
    encode_event, Cursor, Frontier, Publish, MAX_CURSOR_ORIGINS, MAX_RETRY_MS, RESERVED_EVENTS,
};

// The parser the fuzz targets use too: written from the WHATWG rules, sharing
// nothing with the broker's encoder.
#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod sse;

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
        let parsed = sse::parse_sse(&wire);
        prop_assert_eq!(parsed.events.len(), 1, "{:?} -> {:?}", wire, parsed);
        prop_assert!(parsed.pending_fields.is_empty(), "{:?}", parsed);
        prop_assert!(parsed.comments.is_empty(), "{:?}", parsed);
        prop_assert_eq!(&parsed.unterminated, "");
        let event = &parsed.events[0];

        let compact = body.data.to_string();
        prop_assert_eq!(&event.data, &compact);
        prop_assert_eq!(
            &event.event_type,
            body.event.as_deref().unwrap_or("message")
        );
        prop_assert_eq!(&event.last_event_id, body.id.as_deref().unwrap_or(""));

        let mut expected = Vec::new();
        if let Some(id) = &body.id {
            expected.push(("id".to_owned(), id.clone()));
        }
        if let Some(event) = &body.event {
            expected.push(("event".to_owned(), event.clone()));
        }
        if let Some(retry) = body.retry {
            expected.push(("retry".to_owned(), retry.to_string()));
        }
        expected.push(("data".to_owned(), compact));
        prop_assert_eq!(&event.fields, &expected, "no extra field or line");
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

/// The parser itself follows the rules the properties rely on (so a lenient parser
/// cannot make them pass).
#[test]
fn the_reference_parser_splits_on_every_line_ending() {
    let parsed =
        sse::parse_sse(b"data: a\rdata:b\r\ndata:  c\nevent: x\rid: 1\0\nretry\n\ndata: d");
    assert_eq!(parsed.events.len(), 1, "{parsed:?}");
    let event = &parsed.events[0];
    assert_eq!(event.data, "a\nb\n c");
    assert_eq!(event.event_type, "x");
    assert_eq!(event.last_event_id, "", "an id with NUL is ignored");
    assert_eq!(event.fields.len(), 6);
    assert_eq!(parsed.unterminated, "data: d");
    let two = sse::parse_sse("data: 1\n\u{2028}data: 2\n\n".as_bytes());
    assert_eq!(
        two.events[0].fields[1].0, "\u{2028}data",
        "U+2028 is not a line break"
    );
}
