//! A Last-Event-ID: `Cursor::parse` never panics, and what it accepts encodes back
//! to a cursor that parses to the same value, in the safe alphabet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::event::Cursor;

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(cursor) = Cursor::parse(text) else {
        return;
    };
    let encoded = cursor.encode();
    assert!(
        encoded.bytes().all(|b| b"0123456789abcdef.~".contains(&b)),
        "{encoded:?}"
    );
    assert_eq!(Cursor::parse(&encoded), Ok(cursor));
});
