//! A publish body with any of its fields (`id`, `event`, `data`, `retry`):
//! `Publish::from_json` refuses it, or it keeps every bound and its SSE encoding
//! reads back, through the client crate's EventSource parser, as exactly one event
//! carrying the same name, id, retry and data, in one line per field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::event::{encode_event, Publish, MAX_RETRY_MS, RESERVED_EVENTS};
use sse_cluster_client::Parser;

fuzz_target!(|body: &[u8]| {
    let Ok(publish) = Publish::from_json(body) else {
        return;
    };
    // What is accepted, a strict decoder (serde_json with its default limits: no lone
    // surrogates, 127 levels, finite numbers) reads, and it is the data that was sent.
    let data: serde_json::Value = serde_json::from_str(&publish.data)
        .unwrap_or_else(|e| panic!("accepted data a strict decoder refuses: {e}"));
    // The body itself is one level deeper than its data, so it may be past the limit.
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) {
        assert_eq!(data, body["data"], "compacting changed the data");
    }
    assert!(publish.retry.is_none_or(|retry| retry <= MAX_RETRY_MS));
    assert!(!publish
        .event
        .as_deref()
        .is_some_and(|name| RESERVED_EVENTS.contains(&name)));
    let bytes = encode_event(
        publish.id.as_deref(),
        publish.event.as_deref(),
        publish.retry,
        &publish.data,
    );
    let mut parser = Parser::new();
    let events = parser.feed_to_vec(&bytes);
    assert_eq!(events.len(), 1, "{bytes:?} -> {events:?}");
    assert_eq!(parser.buffered(), 0, "bytes after the last line end: {bytes:?}");
    let event = &events[0];
    assert_eq!(event.data, publish.data);
    assert_eq!(event.event, publish.event.as_deref().unwrap_or("message"));
    assert_eq!(event.id, publish.id.as_deref().unwrap_or(""));
    assert_eq!(parser.retry(), publish.retry);
    // One line per field and the blank one that ends the block: no field, comment
    // or data line more (a line break inside a value would make one).
    let lines = usize::from(publish.id.is_some())
        + usize::from(publish.event.is_some())
        + usize::from(publish.retry.is_some())
        + 1;
    let line_ends = bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert_eq!(line_ends, lines + 1, "{bytes:?}");
    assert!(bytes.ends_with(b"\n\n"), "{bytes:?}");
});
