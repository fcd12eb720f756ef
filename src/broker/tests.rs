use super::*;
use crate::event::Frontier;
use std::time::Duration;

fn broker_with(replay_events: usize, buffer: usize) -> Broker {
    Broker::new(
        0xabc,
        Clock::starting_at(1_000_000),
        BrokerSettings {
            replay_events,
            replay_age: Duration::from_secs(60),
            subscriber_buffer: buffer,
            relay_queue_events: 1000,
            relay_queue_bytes: 1 << 20,
            fault_disable_dedup: false,
        },
        Arc::new(Metrics::default()),
    )
}

fn broker() -> Broker {
    broker_with(100, 50)
}

fn event(data: &str) -> Publish {
    Publish {
        id: None,
        event: None,
        data: data.into(),
        retry: None,
    }
}

fn with_id(data: &str, id: &str) -> Publish {
    Publish {
        id: Some(id.into()),
        ..event(data)
    }
}

/// The `data:` values in a chunk of SSE bytes, in order.
fn data_lines(bytes: &[u8]) -> Vec<String> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

fn last_id(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").map(str::to_owned))
        .next_back()
}

async fn read_data(sub: &mut Subscription) -> Vec<String> {
    match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        Ok(Next::Data(bytes)) => data_lines(&bytes),
        other => panic!("expected data, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn subscribers_get_events_in_publish_order() {
    let broker = broker();
    let mut a = broker.subscribe("news", None, Resume::Live).unwrap();
    let mut b = broker.subscribe("news", None, Resume::Live).unwrap();
    for i in 0..5 {
        assert_eq!(
            broker
                .publish("news", &event(&i.to_string()), None)
                .delivered,
            2
        );
    }
    assert_eq!(read_data(&mut a).await, ["0", "1", "2", "3", "4"]);
    assert_eq!(read_data(&mut b).await, ["0", "1", "2", "3", "4"]);
    broker.publish("other", &event("x"), None);
    broker.publish("news", &event("5"), None);
    assert_eq!(read_data(&mut a).await, ["5"]);
}

#[tokio::test(start_paused = true)]
async fn resume_replays_exactly_the_missed_events() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    broker.publish("c", &event("1"), None);
    broker.publish("c", &event("2"), None);
    let Next::Data(bytes) = sub.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    drop(sub);
    broker.publish("c", &event("3"), None);
    broker.publish("c", &event("4"), None);
    let mut resumed = broker.subscribe("c", None, Resume::From(&cursor)).unwrap();
    let preamble = resumed.take_preamble().unwrap();
    assert_eq!(data_lines(&preamble), ["3", "4"]);
    assert!(!String::from_utf8_lossy(&preamble).contains("reset"));
    broker.publish("c", &event("5"), None);
    assert_eq!(read_data(&mut resumed).await, ["5"]);
}

#[tokio::test(start_paused = true)]
async fn the_first_cursor_covers_events_published_while_away() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    let cursor = Cursor::parse(&last_id(&sub.take_preamble().unwrap()).unwrap()).unwrap();
    drop(sub);
    broker.publish("c", &event("while-away"), None);
    let mut resumed = broker.subscribe("c", None, Resume::From(&cursor)).unwrap();
    assert_eq!(
        data_lines(&resumed.take_preamble().unwrap()),
        ["while-away"]
    );
}

#[tokio::test(start_paused = true)]
async fn resume_past_the_window_gets_a_reset_then_what_remains() {
    let broker = broker_with(3, 3);
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    broker.publish("c", &event("1"), None);
    let Next::Data(bytes) = sub.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    drop(sub);
    for i in 2..=6 {
        broker.publish("c", &event(&i.to_string()), None);
    }
    let mut resumed = broker.subscribe("c", None, Resume::From(&cursor)).unwrap();
    let preamble = String::from_utf8(resumed.take_preamble().unwrap().to_vec()).unwrap();
    assert!(preamble.starts_with("event: reset\n"), "{preamble}");
    assert_eq!(data_lines(preamble.as_bytes())[1..], ["4", "5", "6"]);
}

#[tokio::test(start_paused = true)]
async fn a_cursor_older_than_the_node_gets_a_reset() {
    let broker = broker();
    let stale = Cursor {
        time_ms: 999_000,
        frontier: Frontier::default(),
    };
    let mut sub = broker.subscribe("c", None, Resume::From(&stale)).unwrap();
    assert!(String::from_utf8_lossy(&sub.take_preamble().unwrap()).starts_with("event: reset"));
}

#[tokio::test(start_paused = true)]
async fn a_republished_id_is_delivered_once() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    let first = broker.publish("c", &with_id("1", "order-7"), None);
    let again = broker.publish("c", &with_id("1", "order-7"), None);
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.id, again.id);
    broker.publish("c", &event("2"), None);
    assert_eq!(read_data(&mut sub).await, ["1", "2"]);
    // Once the original leaves the window the id may be used again.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        !broker
            .publish("c", &with_id("1", "order-7"), None)
            .duplicate
    );
}

#[tokio::test(start_paused = true)]
async fn targeted_events_reach_only_their_client() {
    let broker = broker();
    let mut alice = broker.subscribe("c", Some("alice"), Resume::Live).unwrap();
    let mut bob = broker.subscribe("c", Some("bob"), Resume::Live).unwrap();
    assert_eq!(
        broker
            .publish("c", &event("for-bob"), Some("bob"))
            .delivered,
        1
    );
    broker.publish("c", &event("for-all"), None);
    assert_eq!(read_data(&mut alice).await, ["for-all"]);
    assert_eq!(read_data(&mut bob).await, ["for-bob", "for-all"]);
    assert_eq!(
        broker
            .subscribe("c", Some("bob"), Resume::Live)
            .unwrap_err(),
        SubscribeError::ClientTaken
    );
}

/// A waker that counts its wakes.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, std::task::Waker) {
    let counter = Arc::new(CountingWaker(Default::default()));
    (counter.clone(), counter.into())
}

#[test]
fn an_append_wakes_exactly_the_waiting_subscribers_it_is_for() {
    let broker = broker();
    let mut alice = broker.subscribe("c", Some("alice"), Resume::Live).unwrap();
    let mut bob = broker.subscribe("c", Some("bob"), Resume::Live).unwrap();
    alice.take_preamble();
    bob.take_preamble();
    let (alice_wakes, alice_waker) = counting_waker();
    let (bob_wakes, bob_waker) = counting_waker();
    let mut alice_cx = Context::from_waker(&alice_waker);
    let mut bob_cx = Context::from_waker(&bob_waker);
    assert!(alice.poll_next(&mut alice_cx).is_pending());
    assert!(bob.poll_next(&mut bob_cx).is_pending());
    // Polling again while waiting keeps one registration, not two.
    assert!(bob.poll_next(&mut bob_cx).is_pending());

    broker.publish("c", &event("for-bob"), Some("bob"));
    assert_eq!(alice_wakes.0.load(Relaxed), 0, "not for alice");
    assert_eq!(bob_wakes.0.load(Relaxed), 1);
    assert!(matches!(
        bob.poll_next(&mut bob_cx),
        Poll::Ready(Next::Data(_))
    ));
    assert!(alice.poll_next(&mut alice_cx).is_pending());

    // A subscriber that is not waiting (it has not polled since its last data) is
    // not woken again; one that is, is woken once per append.
    broker.publish("c", &event("for-all"), None);
    broker.publish("c", &event("for-all-2"), None);
    assert_eq!(alice_wakes.0.load(Relaxed), 1);
    assert_eq!(bob_wakes.0.load(Relaxed), 1);
    match bob.poll_next(&mut bob_cx) {
        Poll::Ready(Next::Data(bytes)) => assert_eq!(data_lines(&bytes), ["for-all", "for-all-2"]),
        other => panic!("expected both events at once, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_past_its_buffer_is_told_and_others_are_not() {
    let broker = broker_with(100, 10);
    let mut slow = broker.subscribe("c", None, Resume::Live).unwrap();
    let mut fast = broker.subscribe("c", None, Resume::Live).unwrap();
    for i in 0..11 {
        broker.publish("c", &event(&i.to_string()), None);
        assert_eq!(read_data(&mut fast).await, [i.to_string()]);
    }
    assert!(matches!(slow.next().await, Next::Overflow { behind: 11 }));
    assert_eq!(
        broker.metrics().slow_subscriber_disconnects.load(Relaxed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn publish_all_reaches_every_channel_once() {
    let broker = broker();
    let mut a = broker.subscribe("a", None, Resume::Live).unwrap();
    let mut b = broker.subscribe("b", None, Resume::Live).unwrap();
    let outcome = broker.publish_all(&event("hello"));
    assert_eq!((outcome.channels, outcome.delivered), (2, 2));
    assert_eq!(read_data(&mut a).await, ["hello"]);
    assert_eq!(read_data(&mut b).await, ["hello"]);
}

#[tokio::test(start_paused = true)]
async fn channels_live_with_subscribers_and_history_expires() {
    let broker = broker();
    let sub = broker.subscribe("quiet", None, Resume::Live).unwrap();
    assert_eq!(broker.channels().len(), 1);
    drop(sub);
    assert_eq!(broker.stats(), BrokerStats::default());

    let sub = broker.subscribe("busy", None, Resume::Live).unwrap();
    broker.publish("busy", &event("1"), None);
    drop(sub);
    // No subscriber: not listed, but its history stays for resumes.
    assert!(broker.channels().is_empty());
    assert_eq!(broker.stats().dormant_channels, 1);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(broker.expire(), 0);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(broker.expire(), 1);
    assert_eq!(broker.stats(), BrokerStats::default());
}

#[tokio::test(start_paused = true)]
async fn many_subscribe_cycles_leave_nothing_behind() {
    let broker = broker();
    for i in 0..10_000 {
        let channel = format!("ch{}", i % 97);
        let sub = broker
            .subscribe(&channel, Some(&format!("client{i}")), Resume::Live)
            .unwrap();
        if i % 10 == 0 {
            broker.publish(&channel, &event("x"), None);
        }
        drop(sub);
    }
    assert!(broker.channels().is_empty());
    tokio::time::advance(Duration::from_secs(61)).await;
    broker.expire();
    assert_eq!(broker.stats(), BrokerStats::default());
    assert_eq!(broker.metrics().subscribers.load(Relaxed), 0);
}
