//! What the broker writes, the client reads back: an event encoded by the broker's
//! `encode_event` (after the stream's opening `retry:`, a keep-alive and an id-only
//! block), with an id and name that pass the broker's checks, is read by the
//! client's parser as exactly that id, name, retry and data, however the bytes are
//! cut into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::event::{
    encode_event, encode_id_only, encode_retry, validate_label, KEEP_ALIVE, MAX_RETRY_MS,
};
use sse_cluster_client::{Event, Parser};

const OPENING_ID: &str = "1732358400123~9f2c4e1a77d0b3e5.42";

fuzz_target!(|input: (Option<String>, Option<String>, Option<u64>, String, Vec<u16>)| {
    let (id, event, retry, data, cuts) = input;
    // What the broker would accept: labels it validates, a bounded retry, and data
    // as compact JSON text (any text becomes a JSON string, as a publish body's
    // string data would).
    let id = id.filter(|id| validate_label("id", id).is_ok());
    let event = event.filter(|event| validate_label("event", event).is_ok());
    let retry = retry.map(|retry| retry % (MAX_RETRY_MS + 1));
    let data = match serde_json::from_str::<serde_json::Value>(&data) {
        Ok(value) => value.to_string(),
        Err(_) => serde_json::Value::String(data).to_string(),
    };

    let mut stream = encode_retry(3000).to_vec();
    stream.extend_from_slice(KEEP_ALIVE);
    stream.extend_from_slice(&encode_id_only(OPENING_ID));
    stream.extend_from_slice(&encode_event(
        id.as_deref(),
        event.as_deref(),
        retry,
        &data,
    ));
    let expected = Event {
        event: event.unwrap_or_else(|| "message".to_owned()),
        data,
        id: id.unwrap_or_else(|| OPENING_ID.to_owned()),
    };
    let expected_retry = Some(retry.unwrap_or(3000));

    let mut whole = Parser::new();
    assert_eq!(whole.feed_to_vec(&stream), [expected.clone()], "{stream:?}");
    assert_eq!(whole.retry(), expected_retry);
    assert_eq!(whole.last_event_id(), expected.id);
    assert_eq!(whole.buffered(), 0, "nothing left over");

    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&cut| usize::from(cut) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunked = Parser::new();
    let mut events = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        chunked.feed(&stream[start..cut], |e| events.push(e.to_event()));
        start = cut;
    }
    assert_eq!(events, [expected], "{stream:?}");
    assert_eq!(chunked.retry(), expected_retry);
});
