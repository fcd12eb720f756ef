//! A publish body: `Publish::from_json` refuses it, or its SSE encoding reads back
//! as exactly one event carrying the same name, id and data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::event::{encode_event, Publish};
use sse_cluster_fuzz::parse_sse;

fuzz_target!(|body: &[u8]| {
    let Ok(publish) = Publish::from_json(body) else {
        return;
    };
    // serde_json's `Value` refuses lone surrogate escapes (`"\ud800"`), which the JSON
    // grammar and `RawValue` allow; where it can read the body, the data must match.
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) {
        let data: serde_json::Value =
            serde_json::from_str(&publish.data).expect("accepted data is JSON");
        assert_eq!(data, body["data"], "compacting changed the data");
    }
    let bytes = encode_event(
        publish.id.as_deref(),
        publish.event.as_deref(),
        publish.retry,
        &publish.data,
    );
    let parsed = parse_sse(&bytes);
    assert_eq!(parsed.events.len(), 1, "{bytes:?} -> {parsed:?}");
    assert!(parsed.pending_fields.is_empty() && parsed.comments.is_empty());
    assert!(parsed.unterminated.is_empty());
    let event = &parsed.events[0];
    assert_eq!(event.data, publish.data);
    assert_eq!(
        event.event_type,
        publish.event.as_deref().unwrap_or("message")
    );
    assert_eq!(event.last_event_id, publish.id.as_deref().unwrap_or(""));
    let lines = usize::from(publish.id.is_some())
        + usize::from(publish.event.is_some())
        + usize::from(publish.retry.is_some())
        + 1;
    assert_eq!(event.fields.len(), lines, "{bytes:?}");
});
