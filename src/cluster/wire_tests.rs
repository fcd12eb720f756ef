use super::*;

/// Decodes and checks one frame payload that must be an event.
fn decode_event(payload: &[u8]) -> RemoteEvent<'_> {
    match decode(payload).unwrap() {
        Frame::Event(event) => event.check().unwrap(),
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn gaps_and_pings_decode_as_sent() {
    let mut framer = Framer::new(None);
    let mut reader = FrameReader::default();
    reader.extend(&framer.gap(41));
    reader.extend(&framer.ping());
    let gap = reader.next_frame().unwrap().unwrap();
    assert_eq!(&gap[..], br#"{"gap":{"upto":41}}"#);
    assert!(matches!(decode(&gap), Ok(Frame::Gap { upto: 41 })));
    let ping = reader.next_frame().unwrap().unwrap();
    assert!(matches!(decode(&ping), Ok(Frame::Ping)));
    assert!(reader.next_frame().unwrap().is_none());
}

#[test]
fn names_with_escapes_decode_and_are_checked() {
    let escaped = br#"{"event":{"seq":3,"route":{"client":{"channel":"a\u002eb","client":"x"}},"publish":{"data":1}}}"#;
    let event = decode_event(escaped);
    assert_eq!(
        event.accepted().route,
        Route::Client {
            channel: "a.b",
            client: "x"
        }
    );
    let bad = br#"{"event":{"seq":3,"route":{"channel":"a b"},"publish":{"data":1}}}"#;
    let Ok(Frame::Event(event)) = decode(bad) else {
        panic!("a bad name is refused by the check, after the sequence is read");
    };
    assert_eq!(event.seq, 3);
    assert!(event.check().is_err());
    let reserved = br#"{"event":{"seq":4,"route":"all","publish":{"data":1,"event":"gap"}}}"#;
    let Ok(Frame::Event(event)) = decode(reserved) else {
        panic!("frame");
    };
    assert!(event.check().is_err());
}

#[test]
fn an_oversized_frame_length_is_refused_before_buffering() {
    let mut reader = FrameReader::default();
    reader.extend(&u32::MAX.to_be_bytes());
    assert!(reader.next_frame().is_err());
}
