use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::broker::{Broker, BrokerSettings, Resume, Route};
use crate::clock::Clock;
use crate::cluster::crypto::testing::{handshake, key};
use crate::cluster::wire::{self, Frame, FrameReader, Framer, ENCODED};
use crate::event::Publish;
use crate::metrics::Metrics;

fn publish(data: &str) -> Publish {
    Publish {
        id: None,
        event: None,
        data: data.into(),
        retry: None,
    }
}

fn encoded(seq: u64, data: &str) -> EncodedEvent {
    let publish = publish(data);
    encode_event(Accepted {
        seq,
        route: Route::Channel("c"),
        publish: &publish,
    })
}

/// Pushes events `from..=to` (data: their sequence), accepted at `10 * seq` ms.
fn fill(outbox: &Outbox, from: u64, to: u64) {
    for seq in from..=to {
        let publish = publish(&seq.to_string());
        let event = Accepted {
            seq,
            route: Route::Channel("c"),
            publish: &publish,
        };
        outbox.accepted(seq * 10, event);
    }
}

#[test]
fn readers_get_events_in_order_then_a_gap_when_evicted() {
    let outbox = Outbox::new(3, 1 << 20);
    fill(&outbox, 1, 5);
    assert_eq!(outbox.read(1, 10, usize::MAX), RelayBatch::Gap { upto: 2 });
    assert_eq!(
        outbox.read(3, 10, usize::MAX),
        RelayBatch::Events(vec![encoded(3, "3"), encoded(4, "4"), encoded(5, "5")])
    );
    assert_eq!(
        outbox.read(5, 1, usize::MAX),
        RelayBatch::Events(vec![encoded(5, "5")])
    );
    assert_eq!(outbox.read(6, 10, usize::MAX), RelayBatch::Events(vec![]));
    // Events 1 and 2 (accepted at 10 and 20) are gone: a reader that wants them
    // starts with the gap.
    assert_eq!(outbox.first_since(0), 2);
    assert_eq!(outbox.read(2, 10, usize::MAX), RelayBatch::Gap { upto: 2 });
    assert_eq!(outbox.first_since(20), 2);
    assert_eq!(outbox.first_since(21), 3);
    assert_eq!(outbox.first_since(41), 5);
    assert_eq!(outbox.first_since(1000), 6);
}

#[test]
fn a_read_stops_at_its_byte_bound_but_takes_at_least_one_event() {
    let outbox = Outbox::new(100, 1 << 20);
    fill(&outbox, 1, 5);
    let frame = encoded(1, "1").frame().len();
    let all: Vec<_> = (1..=5).map(|seq| encoded(seq, &seq.to_string())).collect();
    assert!(outbox.has(5) && !outbox.has(6));
    assert_eq!(
        outbox.read(1, 10, 5 * frame),
        RelayBatch::Events(all.clone())
    );
    assert_eq!(
        outbox.read(1, 10, 3 * frame - 1),
        RelayBatch::Events(all[..2].to_vec())
    );
    assert_eq!(
        outbox.read(2, 10, 1),
        RelayBatch::Events(all[1..2].to_vec())
    );
    assert_eq!(
        outbox.read(4, 1, usize::MAX),
        RelayBatch::Events(all[3..4].to_vec())
    );
}

#[test]
fn the_byte_bound_evicts_too() {
    let one = encoded(1, "1").payload().len();
    let outbox = Outbox::new(100, 2 * one + one / 2);
    fill(&outbox, 1, 4);
    assert_eq!(outbox.size(), (2, 2 * one));
    assert_eq!(outbox.read(2, 10, usize::MAX), RelayBatch::Gap { upto: 2 });
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_when_the_event_is_in() {
    let outbox = Arc::new(Outbox::new(10, 1 << 20));
    fill(&outbox, 1, 1);
    // Event 1 is in already.
    tokio::time::timeout(Duration::from_secs(1), outbox.wait(1))
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.wait(2).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    fill(&outbox, 2, 2);
    outbox.flush();
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .unwrap()
        .unwrap();
}

fn relaying_broker(outbox: Arc<Outbox>) -> Broker {
    Broker::with_outlet(
        0xabc,
        Clock::starting_at(1_000_000),
        BrokerSettings {
            replay_events: 100,
            replay_age: Duration::from_secs(60),
            subscriber_buffer: 50,
            relay_queue_events: 1000,
            replay_max_bytes: 1 << 30,
            max_channels: 1000,
            ..Default::default()
        },
        Arc::new(Metrics::default()),
        outbox,
    )
}

/// Each accepted event is encoded once, by the outbox, whatever the number of
/// peers and whether their streams are sealed; what every peer reads decodes to
/// what was published, with its route.
#[tokio::test]
async fn each_accepted_event_is_encoded_once_for_every_peer() {
    let outbox = Arc::new(Outbox::new(1000, 1 << 20));
    let broker = relaying_broker(outbox.clone());
    let _sub = broker
        .subscribe("room", Some("alice"), Resume::Live)
        .unwrap();
    let keyed = Publish {
        id: Some("k1".into()),
        event: Some("note".into()),
        retry: Some(500),
        ..publish(r#"{"a":[1,"x"]}"#)
    };
    let before = ENCODED.with(|n| n.get());
    broker.publish("news", &keyed, None).unwrap();
    // A retry of the same id is a duplicate: not accepted, not encoded.
    assert!(broker.publish("news", &keyed, None).unwrap().duplicate);
    broker
        .publish_batch("news", &[publish("1"), publish("2"), publish("3")], None)
        .unwrap();
    broker
        .publish("room", &publish(r#""hi""#), Some("alice"))
        .unwrap();
    broker.publish_all(&publish(r#""all""#));
    // Another origin's event is applied here, not encoded for peers.
    let relayed = publish("7");
    broker.apply_remote(
        0xdef,
        Accepted {
            seq: 1,
            route: Route::Channel("news"),
            publish: &relayed,
        },
    );
    let accepted = broker.accepted_seq();
    assert_eq!(accepted, 6);
    assert_eq!(ENCODED.with(|n| n.get()) - before, accepted);

    // Three peers read everything: two plain streams and a sealed one.
    let RelayBatch::Events(events) = outbox.read(1, 256, usize::MAX) else {
        panic!("nothing was evicted");
    };
    let plain: Vec<_> = (0..2).map(|_| Framer::new(None).events(&events)).collect();
    let (sealer, mut opener) = handshake(key(), key()).unwrap();
    let sealed = Framer::new(Some(sealer)).events(&events);
    assert_eq!(ENCODED.with(|n| n.get()) - before, accepted);
    let whole: Vec<u8> = events.iter().flat_map(|e| e.frame().to_vec()).collect();
    assert_eq!(plain[0], whole);
    assert_eq!(plain[1], whole);

    let mut reader = FrameReader::default();
    reader.extend(&sealed);
    let mut payloads = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        payloads.push(opener.open(&frame).unwrap());
    }
    let expected = [
        (Route::Channel("news"), keyed.clone()),
        (Route::Channel("news"), publish("1")),
        (Route::Channel("news"), publish("2")),
        (Route::Channel("news"), publish("3")),
        (
            Route::Client {
                channel: "room",
                client: "alice",
            },
            publish(r#""hi""#),
        ),
        (Route::All, publish(r#""all""#)),
    ];
    assert_eq!(payloads.len(), expected.len());
    for (seq, ((payload, event), (route, publish))) in
        payloads.iter().zip(&events).zip(&expected).enumerate()
    {
        assert_eq!(&payload[..], event.payload());
        let decoded = wire::decode(payload);
        let Ok(Frame::Event(wire)) = decoded else {
            panic!("event {seq} did not decode: {decoded:?}");
        };
        let remote = wire.check().unwrap();
        let want = Accepted {
            seq: seq as u64 + 1,
            route: *route,
            publish,
        };
        assert_eq!(remote.accepted(), want);
    }
}
