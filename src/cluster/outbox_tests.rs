use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::broker::Route;
use crate::event::Publish;

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
    assert_eq!(outbox.read(1, 10), RelayBatch::Gap { upto: 2 });
    assert_eq!(
        outbox.read(3, 10),
        RelayBatch::Events(vec![encoded(3, "3"), encoded(4, "4"), encoded(5, "5")])
    );
    assert_eq!(outbox.read(5, 1), RelayBatch::Events(vec![encoded(5, "5")]));
    assert_eq!(outbox.read(6, 10), RelayBatch::Events(vec![]));
    // Events 1 and 2 (accepted at 10 and 20) are gone: a reader that wants them
    // starts with the gap.
    assert_eq!(outbox.first_since(0), 2);
    assert_eq!(outbox.read(2, 10), RelayBatch::Gap { upto: 2 });
    assert_eq!(outbox.first_since(20), 2);
    assert_eq!(outbox.first_since(21), 3);
    assert_eq!(outbox.first_since(41), 5);
    assert_eq!(outbox.first_since(1000), 6);
}

#[test]
fn the_byte_bound_evicts_too() {
    let one = encoded(1, "1").payload().len();
    let outbox = Outbox::new(100, 2 * one + one / 2);
    fill(&outbox, 1, 4);
    assert_eq!(outbox.size(), (2, 2 * one));
    assert_eq!(outbox.read(2, 10), RelayBatch::Gap { upto: 2 });
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
