use proptest::prelude::*;

use super::*;

/// Events of `chunks` fed in order, as (type, data, id).
fn events(chunks: &[&[u8]]) -> Vec<(String, String, String)> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |e| {
            out.push((e.event().to_owned(), e.data().to_owned(), e.id().to_owned()))
        });
    }
    out
}

fn one(stream: &[u8]) -> Vec<(String, String, String)> {
    events(&[stream])
}

fn ev(event: &str, data: &str, id: &str) -> (String, String, String) {
    (event.to_owned(), data.to_owned(), id.to_owned())
}

/// Every way of cutting `stream` in two, and byte by byte, gives `expected`.
fn same_at_every_cut(stream: &[u8], expected: &[(String, String, String)]) {
    for cut in 0..=stream.len() {
        assert_eq!(
            events(&[&stream[..cut], &stream[cut..]]),
            expected,
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(events(&bytes), expected, "byte by byte");
}

#[test]
fn reads_the_broker_stream_cut_anywhere() {
    let stream = b"retry: 3000\nid: 17\n\n: keep-alive\n\nid: 18\nevent: ping\ndata: {\"a\":1}\n\nid: 19\ndata: first\ndata: second\n\n";
    same_at_every_cut(
        stream,
        &[
            ev("ping", "{\"a\":1}", "18"),
            ev("message", "first\nsecond", "19"),
        ],
    );
}

#[test]
fn lines_end_in_lf_cr_or_crlf_also_when_split() {
    let stream = b"data:a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\n";
    same_at_every_cut(
        stream,
        &[
            ev("message", "a", ""),
            ev("message", "b", ""),
            ev("message", "c", ""),
            ev("message", "d", ""),
        ],
    );
}

#[test]
fn a_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next_are_one_line_end() {
    assert_eq!(
        events(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
        [ev("message", "a\nb", "")]
    );
    // Two CRs are two line ends: the second one dispatches.
    assert_eq!(events(&[b"data: a\r", b"\r"]), [ev("message", "a", "")]);
    // An empty chunk between CR and LF changes nothing.
    assert_eq!(
        events(&[b"data: a\r", b"", b"\ndata: b\n\n"]),
        [ev("message", "a\nb", "")]
    );
}

#[test]
fn a_leading_bom_is_stripped_once_also_in_pieces() {
    same_at_every_cut(b"\xEF\xBB\xBFdata: x\n\n", &[ev("message", "x", "")]);
    // A second BOM is text: the field name is then not `data`.
    assert!(one(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n").is_empty());
    // A BOM later in the stream is kept in values.
    assert_eq!(
        one(b"data: \xEF\xBB\xBFx\n\n"),
        [ev("message", "\u{feff}x", "")]
    );
    // Bytes that start like a BOM but are not one stay in the first line.
    let mut parser = Parser::new();
    parser.feed(b"\xEF\xBB", |_| panic!("nothing to dispatch"));
    parser.feed(b"z", |_| panic!("nothing to dispatch"));
    assert_eq!(parser.buffered(), 3);
}

#[test]
fn comments_are_ignored() {
    assert_eq!(
        one(b": hello\n:\ndata: x\n: between\n\n"),
        [ev("message", "x", "")]
    );
    assert!(one(b": only a comment\n\n").is_empty());
}

#[test]
fn a_field_splits_at_the_first_colon_and_loses_one_leading_space() {
    assert_eq!(one(b"data: a: b\n\n"), [ev("message", "a: b", "")]);
    assert_eq!(one(b"data:x\n\n"), [ev("message", "x", "")]);
    assert_eq!(one(b"data:  two\n\n"), [ev("message", " two", "")]);
    assert_eq!(one(b"data:\tx\n\n"), [ev("message", "\tx", "")]);
    assert_eq!(one(b"data: x \n\n"), [ev("message", "x ", "")]);
}

#[test]
fn a_line_without_a_colon_is_a_field_with_an_empty_value() {
    assert_eq!(one(b"data\n\n"), [ev("message", "", "")]);
    assert_eq!(one(b"data\ndata\n\n"), [ev("message", "\n", "")]);
    assert_eq!(one(b"id\ndata: x\n\n"), [ev("message", "x", "")]);
}

#[test]
fn data_lines_join_with_lf() {
    assert_eq!(
        one(b"data: one\ndata:\ndata: three\n\n"),
        [ev("message", "one\n\nthree", "")]
    );
}

#[test]
fn the_event_type_defaults_to_message_and_lasts_one_event() {
    assert_eq!(
        one(b"event: ping\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\nevent: a\nevent: b\ndata: 4\n\n"),
        [
            ev("ping", "1", ""),
            ev("message", "2", ""),
            ev("message", "3", ""),
            ev("b", "4", ""),
        ]
    );
    let mut parser = Parser::new();
    let mut plain = Vec::new();
    parser.feed(
        b"data: a\n\nevent: message\ndata: b\n\nevent: x\ndata: c\n\n",
        |e| plain.push(e.is_message()),
    );
    assert_eq!(plain, [true, true, false]);
}

#[test]
fn an_event_without_data_is_not_dispatched_and_its_type_is_forgotten() {
    assert!(one(b"event: x\nid: 3\n\n").is_empty());
    assert_eq!(one(b"event: x\n\ndata: y\n\n"), [ev("message", "y", "")]);
}

#[test]
fn the_last_event_id_is_set_at_a_blank_line_even_without_dispatch_and_persists() {
    let mut parser = Parser::new();
    assert!(parser.feed_to_vec(b"retry: 3000\nid: 17\n").is_empty());
    assert_eq!(parser.last_event_id(), "", "not before the blank line");
    assert!(parser.feed_to_vec(b"\n").is_empty());
    assert_eq!(parser.last_event_id(), "17");
    let got = parser.feed_to_vec(b"data: a\n\nid: 18\ndata: b\n\ndata: c\n\n");
    let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["17", "18", "18"]);
    // An empty id clears it.
    parser.feed(b"id\n\n", |_| {});
    assert_eq!(parser.last_event_id(), "");
}

#[test]
fn an_id_with_nul_is_ignored() {
    let mut parser = Parser::new();
    let got = parser.feed_to_vec(b"id: 1\n\nid: a\0b\ndata: x\n\n");
    assert_eq!(
        got,
        [Event {
            event: "message".into(),
            data: "x".into(),
            id: "1".into()
        }]
    );
    assert_eq!(parser.last_event_id(), "1");
}

#[test]
fn retry_takes_only_ascii_digits() {
    let retry = |stream: &[u8]| {
        let mut parser = Parser::new();
        parser.feed(stream, |_| {});
        parser.retry()
    };
    assert_eq!(retry(b"retry: 2500\n"), Some(2500));
    assert_eq!(retry(b"retry:0\n"), Some(0));
    assert_eq!(retry(b"retry: 1000\nretry: 12a\n"), Some(1000));
    assert_eq!(retry(b"retry: -1\n"), None);
    assert_eq!(retry(b"retry: 1.5\n"), None);
    assert_eq!(
        retry(b"retry:  15\n"),
        None,
        "one space is removed, not two"
    );
    assert_eq!(retry(b"retry\n"), None);
    assert_eq!(retry(b"retry: \xD9\xA1\n"), None, "an Arabic-Indic digit");
    assert_eq!(retry(b"retry: 99999999999999999999999\n"), None);
    // Retry needs no blank line and dispatches nothing.
    assert!(one(b"retry: 5\n\n").is_empty());
}

#[test]
fn unknown_fields_are_ignored_and_names_are_case_sensitive() {
    assert_eq!(
        one(b"foo: bar\nData: no\nEVENT: no\ndata: yes\n\n"),
        [ev("message", "yes", "")]
    );
}

#[test]
fn text_is_decoded_as_utf8_with_replacement_also_across_chunks() {
    same_at_every_cut(
        "data: h\u{e9}llo \u{1f600}\n\n".as_bytes(),
        &[ev("message", "h\u{e9}llo \u{1f600}", "")],
    );
    assert_eq!(
        one(b"data: a\xFFb\xE2\x82\n\n"),
        [ev("message", "a\u{fffd}b\u{fffd}", "")]
    );
    assert_eq!(one(b"event: \xC3\n\xA9data: x\n\n").len(), 0);
}

#[test]
fn an_unfinished_event_is_dropped_at_the_end_of_a_stream() {
    let mut parser = Parser::new();
    parser.feed(b"id: 5\n\nevent: x\ndata: half\nid: 6\n", |_| {
        panic!("no event")
    });
    parser.end_of_stream();
    assert_eq!(parser.last_event_id(), "5");
    assert_eq!(
        parser.buffered(),
        0,
        "the id buffer is the last event id again"
    );
    let got = parser.feed_to_vec(b"\xEF\xBB\xBFdata: next\n\n");
    assert_eq!(
        got,
        [Event {
            event: "message".into(),
            data: "next".into(),
            id: "5".into()
        }]
    );
}

#[test]
fn a_parser_can_start_from_a_last_event_id() {
    let mut parser = Parser::with_last_event_id("9");
    assert_eq!(
        parser.feed_to_vec(b"data: x\n\n"),
        [Event {
            event: "message".into(),
            data: "x".into(),
            id: "9".into()
        }]
    );
}

/// Streams made of the pieces where cutting matters: line ends, BOM bytes, fields,
/// multi-byte characters, invalid bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"\r"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\xEF\xBB\xBF"[..]),
        Just(&b"data"[..]),
        Just(&b"data: "[..]),
        Just(&b"event:"[..]),
        Just(&b"id: "[..]),
        Just(&b"retry: "[..]),
        Just(&b":"[..]),
        Just(&b" "[..]),
        Just(&b"\0"[..]),
        Just(&b"42"[..]),
        Just(&b"x"[..]),
        Just("\u{e9}\u{1f600}".as_bytes()),
        Just(&b"\xE2\x82"[..]),
        Just(&b"\xFF"[..]),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn cutting_the_stream_anywhere_changes_nothing(
        stream in stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut whole = Parser::new();
        let expected = whole.feed_to_vec(&stream);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parser = Parser::new();
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            got.extend(parser.feed_to_vec(&stream[start..cut]));
            start = cut;
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(parser.last_event_id(), whole.last_event_id());
        prop_assert_eq!(parser.retry(), whole.retry());
        prop_assert_eq!(parser.buffered(), whole.buffered());
    }
}
