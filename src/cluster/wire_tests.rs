use proptest::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;

use super::*;
use crate::event::{MAX_RETRY_MS, RESERVED_EVENTS};

/// An accepted event, owned, as the property tests draw it.
#[derive(Debug, Clone)]
struct Drawn {
    seq: u64,
    /// (channel, client); no channel: every channel.
    channel: Option<(String, Option<String>)>,
    publish: Publish,
}

impl Drawn {
    fn accepted(&self) -> Accepted<'_> {
        let route = match &self.channel {
            None => Route::All,
            Some((channel, None)) => Route::Channel(channel),
            Some((channel, Some(client))) => Route::Client { channel, client },
        };
        Accepted {
            seq: self.seq,
            route,
            publish: &self.publish,
        }
    }
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:~@-]{1,24}"
}

/// Labels with what JSON must escape (quotes, backslashes) and non-ASCII text.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9 \"\\\\/é€😀_-]{1,24}"
}

/// Compact JSON texts, as a checked publish holds its `data`.
fn data() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_owned()),
        Just("-1.5e-7".to_owned()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((label(), inner), 0..4).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn drawn() -> impl Strategy<Value = Drawn> {
    let route = prop_oneof![
        Just(None),
        name().prop_map(|c| Some((c, None))),
        (name(), name()).prop_map(|(c, x)| Some((c, Some(x)))),
    ];
    let event = label().prop_filter("reserved", |e| !RESERVED_EVENTS.contains(&e.as_str()));
    (
        any::<u64>(),
        route,
        data(),
        prop::option::of(label()),
        prop::option::of(event),
        prop::option::of(0..=MAX_RETRY_MS),
    )
        .prop_map(|(seq, channel, data, id, event, retry)| Drawn {
            seq,
            channel,
            publish: Publish {
                id,
                event,
                data,
                retry,
            },
        })
}

/// The frame format as serde derives it from the documented shape (`PROTOCOL.md`):
/// the hand-written encoder must write exactly these bytes.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ModelFrame<'a> {
    Event {
        seq: u64,
        route: ModelRoute<'a>,
        publish: ModelPublish<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ModelRoute<'a> {
    Channel(&'a str),
    Client { channel: &'a str, client: &'a str },
    All,
}

#[derive(Serialize)]
struct ModelPublish<'a> {
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
}

fn model(event: Accepted<'_>) -> Vec<u8> {
    let route = match event.route {
        Route::Channel(channel) => ModelRoute::Channel(channel),
        Route::Client { channel, client } => ModelRoute::Client { channel, client },
        Route::All => ModelRoute::All,
    };
    let publish = event.publish;
    let data: &RawValue = serde_json::from_str(&publish.data).unwrap();
    serde_json::to_vec(&ModelFrame::Event {
        seq: event.seq,
        route,
        publish: ModelPublish {
            data,
            id: publish.id.as_deref(),
            event: publish.event.as_deref(),
            retry: publish.retry,
        },
    })
    .unwrap()
}

/// Decodes and checks one frame payload that must be an event.
fn decode_event(payload: &[u8]) -> RemoteEvent<'_> {
    match decode(payload).unwrap() {
        Frame::Event(event) => event.check().unwrap(),
        other => panic!("not an event: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// decode(encode(x)) == x, through the framing of a stream without a key, and
    /// the bytes are the documented format's.
    #[test]
    fn an_encoded_event_decodes_to_itself(drawn in drawn()) {
        let event = drawn.accepted();
        let encoded = encode_event(event);
        let frame = encoded.frame();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, frame.len() - 4);
        prop_assert_eq!(encoded.payload(), &model(event)[..]);
        let mut reader = FrameReader::default();
        reader.extend(frame);
        let payload = reader.next_frame().unwrap().unwrap();
        prop_assert!(reader.is_empty());
        let decoded = decode_event(&payload);
        prop_assert_eq!(decoded.accepted(), event);
    }
}

#[test]
fn gaps_ticks_and_pings_decode_as_sent() {
    let mut framer = Framer::new(None);
    let mut reader = FrameReader::default();
    reader.extend(&framer.gap(41));
    reader.extend(&framer.tick(1_732_358_400_123));
    reader.extend(&framer.ping());
    let gap = reader.next_frame().unwrap().unwrap();
    assert_eq!(&gap[..], br#"{"gap":{"upto":41}}"#);
    assert!(matches!(decode(&gap), Ok(Frame::Gap { upto: 41 })));
    let tick = reader.next_frame().unwrap().unwrap();
    assert_eq!(&tick[..], br#"{"tick":1732358400123}"#);
    assert!(matches!(decode(&tick), Ok(Frame::Tick(1_732_358_400_123))));
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
