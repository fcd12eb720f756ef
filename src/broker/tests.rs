use super::*;
use crate::event::Frontier;
use std::time::Duration;

fn settings(replay_events: usize, buffer: usize) -> BrokerSettings {
    BrokerSettings {
        replay_events,
        replay_age: Duration::from_secs(60),
        subscriber_buffer: buffer,
        relay_queue_events: 1000,
        relay_queue_bytes: 1 << 20,
        replay_max_bytes: 1 << 30,
        max_channels: 100_000,
        fault_disable_dedup: false,
    }
}

fn broker_from(settings: BrokerSettings) -> Broker {
    Broker::new(
        0xabc,
        Clock::starting_at(1_000_000),
        settings,
        Arc::new(Metrics::default()),
    )
}

fn broker_with(replay_events: usize, buffer: usize) -> Broker {
    broker_from(settings(replay_events, buffer))
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
                .unwrap()
                .delivered,
            2
        );
    }
    assert_eq!(read_data(&mut a).await, ["0", "1", "2", "3", "4"]);
    assert_eq!(read_data(&mut b).await, ["0", "1", "2", "3", "4"]);
    broker.publish("other", &event("x"), None).unwrap();
    broker.publish("news", &event("5"), None).unwrap();
    assert_eq!(read_data(&mut a).await, ["5"]);
}

#[tokio::test(start_paused = true)]
async fn resume_replays_exactly_the_missed_events() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    broker.publish("c", &event("1"), None).unwrap();
    broker.publish("c", &event("2"), None).unwrap();
    let Next::Data(bytes) = sub.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    drop(sub);
    broker.publish("c", &event("3"), None).unwrap();
    broker.publish("c", &event("4"), None).unwrap();
    let mut resumed = broker.subscribe("c", None, Resume::From(&cursor)).unwrap();
    let preamble = resumed.take_preamble().unwrap();
    assert_eq!(data_lines(&preamble), ["3", "4"]);
    assert!(!String::from_utf8_lossy(&preamble).contains("reset"));
    broker.publish("c", &event("5"), None).unwrap();
    assert_eq!(read_data(&mut resumed).await, ["5"]);
}

#[tokio::test(start_paused = true)]
async fn the_first_cursor_covers_events_published_while_away() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    let cursor = Cursor::parse(&last_id(&sub.take_preamble().unwrap()).unwrap()).unwrap();
    drop(sub);
    broker.publish("c", &event("while-away"), None).unwrap();
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
    broker.publish("c", &event("1"), None).unwrap();
    let Next::Data(bytes) = sub.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    drop(sub);
    for i in 2..=6 {
        broker.publish("c", &event(&i.to_string()), None).unwrap();
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
    let first = broker.publish("c", &with_id("1", "order-7"), None).unwrap();
    let again = broker.publish("c", &with_id("1", "order-7"), None).unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.id, again.id);
    broker.publish("c", &event("2"), None).unwrap();
    assert_eq!(read_data(&mut sub).await, ["1", "2"]);
    // Once the original leaves the window the id may be used again.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        !broker
            .publish("c", &with_id("1", "order-7"), None)
            .unwrap()
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
            .unwrap()
            .delivered,
        1
    );
    broker.publish("c", &event("for-all"), None).unwrap();
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

    broker.publish("c", &event("for-bob"), Some("bob")).unwrap();
    assert_eq!(alice_wakes.0.load(Relaxed), 0, "not for alice");
    assert_eq!(bob_wakes.0.load(Relaxed), 1);
    assert!(matches!(
        bob.poll_next(&mut bob_cx),
        Poll::Ready(Next::Data(_))
    ));
    assert!(alice.poll_next(&mut alice_cx).is_pending());

    // A subscriber that is not waiting (it has not polled since its last data) is
    // not woken again; one that is, is woken once per append.
    broker.publish("c", &event("for-all"), None).unwrap();
    broker.publish("c", &event("for-all-2"), None).unwrap();
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
        broker.publish("c", &event(&i.to_string()), None).unwrap();
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
    broker.publish("busy", &event("1"), None).unwrap();
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
            broker.publish(&channel, &event("x"), None).unwrap();
        }
        drop(sub);
    }
    assert!(broker.channels().is_empty());
    tokio::time::advance(Duration::from_secs(61)).await;
    broker.expire();
    assert_eq!(broker.stats(), BrokerStats::default());
    assert_eq!(broker.metrics().subscribers.load(Relaxed), 0);
}

// ---- limits: replay bytes per node, channels per node ----

/// The ledger agrees with the logs: the byte total, one index entry per channel with
/// history (at its oldest event) and one per channel without subscribers.
fn check_ledger(broker: &Broker) {
    let state = broker.state();
    let (mut bytes, mut fronts, mut dormant) = (0, 0, 0);
    let mut oldest: Option<u64> = None;
    for channel in state.channels.values() {
        let log = channel.log();
        assert!(!log.removed, "{} is removed but still mapped", channel.name);
        let sum: usize = log.entries.iter().map(|e| e.cost()).sum();
        assert_eq!(log.bytes, sum, "bytes of {}", channel.name);
        bytes += sum;
        if let Some(front) = log.entries.front() {
            fronts += 1;
            oldest = Some(oldest.map_or(front.stamp, |o| o.min(front.stamp)));
        }
        if log.subscribers.is_empty() {
            dormant += 1;
        }
    }
    assert_eq!(state.ledger.bytes, bytes);
    assert_eq!(state.ledger.indexed(), (fronts, dormant));
    assert_eq!(state.ledger.oldest().map(|(stamp, _)| stamp), oldest);
}

/// What one event costs as these tests publish them: two characters of data and a
/// single-digit sequence, at the paused clock's time.
fn one_event_cost() -> usize {
    let broker = broker();
    broker.publish("a", &event("a1"), None).unwrap();
    broker.stats().history_bytes
}

/// The cursor a subscriber gets on opening `channel` now (the subscriber then leaves).
fn opening_cursor(broker: &Broker, channel: &str) -> Cursor {
    let mut sub = broker.subscribe(channel, None, Resume::Live).unwrap();
    Cursor::parse(&last_id(&sub.take_preamble().unwrap()).unwrap()).unwrap()
}

/// Resumes `channel` from `cursor`: whether it opened with a reset, and the replayed data.
fn resume(broker: &Broker, channel: &str, cursor: &Cursor) -> (bool, Vec<String>) {
    let mut sub = broker
        .subscribe(channel, None, Resume::From(cursor))
        .unwrap();
    let preamble = String::from_utf8(sub.take_preamble().unwrap().to_vec()).unwrap();
    let reset = preamble.starts_with("event: reset\n");
    let mut data = data_lines(preamble.as_bytes());
    if reset {
        data.remove(0);
    }
    (reset, data)
}

fn has_channel(broker: &Broker, name: &str) -> bool {
    broker.state().channels.contains_key(name)
}

#[tokio::test(start_paused = true)]
async fn the_byte_limit_evicts_the_oldest_events_first_whatever_their_channel() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 4 * cost + cost / 2,
        ..settings(100, 50)
    });
    let starts: Vec<Cursor> = ["a", "b", "c"]
        .iter()
        .map(|c| opening_cursor(&broker, c))
        .collect();
    for (channel, data) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("c", "c1"),
        ("b", "b2"),
        ("a", "a3"),
    ] {
        broker.publish(channel, &event(data), None).unwrap();
        check_ledger(&broker);
    }
    let stats = broker.stats();
    assert_eq!((stats.history_events, stats.history_bytes), (4, 4 * cost));
    let metrics = broker.metrics();
    assert_eq!(metrics.history_evicted_events.load(Relaxed), 2);
    assert_eq!(metrics.history_evicted_bytes.load(Relaxed), 2 * cost as u64);
    // a1 and b1 went; a resume from before them is told, then gets what remains.
    assert_eq!(
        resume(&broker, "a", &starts[0]),
        (true, vec!["a2".into(), "a3".into()])
    );
    assert_eq!(resume(&broker, "b", &starts[1]), (true, vec!["b2".into()]));
    assert_eq!(resume(&broker, "c", &starts[2]), (false, vec!["c1".into()]));
    check_ledger(&broker);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_whose_unread_events_were_evicted_for_bytes_gets_overflow() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 2 * cost + cost / 2,
        ..settings(100, 50)
    });
    let mut lagging = broker.subscribe("a", None, Resume::Live).unwrap();
    let mut reader = broker.subscribe("b", None, Resume::Live).unwrap();
    broker.publish("a", &event("a1"), None).unwrap();
    broker.publish("b", &event("b1"), None).unwrap();
    assert_eq!(read_data(&mut reader).await, ["b1"]);
    // b2 evicts a1 (unread by `lagging`), b3 evicts b1 (already read by `reader`).
    broker.publish("b", &event("b2"), None).unwrap();
    broker.publish("b", &event("b3"), None).unwrap();
    assert!(matches!(lagging.next().await, Next::Overflow { .. }));
    assert_eq!(read_data(&mut reader).await, ["b2", "b3"]);
    assert_eq!(
        broker.metrics().slow_subscriber_disconnects.load(Relaxed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_larger_than_the_byte_limit_is_kept_and_delivered() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 3 * cost,
        ..settings(100, 50)
    });
    let mut sub = broker.subscribe("a", None, Resume::Live).unwrap();
    broker.publish("b", &event("b1"), None).unwrap();
    let big = "x".repeat(4 * cost);
    broker.publish("a", &event(&big), None).unwrap();
    assert_eq!(read_data(&mut sub).await, [big]);
    assert_eq!(broker.stats().history_events, 1);
    broker.publish("a", &event("a2"), None).unwrap();
    assert_eq!(read_data(&mut sub).await, ["a2"]);
    assert_eq!(broker.stats().history_events, 1);
    check_ledger(&broker);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_channel_does_not_make_a_busy_one_grow_the_index() {
    let broker = broker_with(10, 10);
    broker.publish("quiet", &event("q"), None).unwrap();
    let _sub = broker.subscribe("busy", None, Resume::Live).unwrap();
    for i in 0..1000 {
        broker
            .publish("busy", &event(&i.to_string()), None)
            .unwrap();
    }
    check_ledger(&broker);
    // One index entry per channel with history, one per channel without subscribers.
    assert_eq!(broker.state().ledger.indexed(), (2, 1));
    assert_eq!(broker.stats().history_events, 11);
}

/// Subscribes, publishes (one channel, all, relayed), gaps, unsubscribes and expiry in
/// a fixed pseudo-random mix under tight limits: the ledger stays exact throughout,
/// and once everyone has left and the window has passed nothing is counted.
#[tokio::test(start_paused = true)]
async fn history_bytes_follow_every_way_events_leave_and_return_to_zero() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 12 * cost,
        max_channels: 5,
        ..settings(4, 4)
    });
    let mut subs: Vec<Subscription> = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut relayed = 0;
    for step in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let channel = format!("c{}", x % 8);
        match (x >> 8) % 10 {
            0 | 1 => {
                if let Ok(sub) = broker.subscribe(&channel, None, Resume::Live) {
                    subs.push(sub);
                }
            }
            2 if !subs.is_empty() => {
                subs.swap_remove((x >> 16) as usize % subs.len());
            }
            3 => {
                broker.publish_all(&event("all"));
            }
            4 => {
                relayed += 1;
                broker.apply_remote(0xdef, relayed, &Route::Channel(channel), &event("r"));
            }
            5 if step % 50 == 0 => broker.remote_gap(0x123, step),
            6 => tokio::time::advance(Duration::from_secs(7)).await,
            7 => {
                broker.expire();
            }
            _ => {
                let _ = broker.publish(&channel, &event("p"), None);
            }
        }
        check_ledger(&broker);
        assert!(broker.state().channels.len() <= 5);
    }
    assert!(broker.metrics().history_evicted_events.load(Relaxed) > 0);
    assert!(broker.metrics().channels_evicted.load(Relaxed) > 0);
    drop(subs);
    check_ledger(&broker);
    tokio::time::advance(Duration::from_secs(61)).await;
    broker.expire();
    assert_eq!(broker.stats(), BrokerStats::default());
    assert_eq!(broker.state().ledger.indexed(), (0, 0));
    assert_eq!(broker.metrics().subscribers.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn at_the_channel_limit_the_quietest_channel_without_subscribers_makes_room() {
    let broker = broker_from(BrokerSettings {
        max_channels: 3,
        ..settings(100, 50)
    });
    broker.publish("first", &event("1"), None).unwrap();
    broker.publish("second", &event("2"), None).unwrap();
    let _live = broker.subscribe("live", None, Resume::Live).unwrap();
    // "first" was made first but has the newest event now.
    broker.publish("first", &event("3"), None).unwrap();
    broker.publish("fresh", &event("4"), None).unwrap();
    assert!(!has_channel(&broker, "second"));
    assert!(has_channel(&broker, "first") && has_channel(&broker, "fresh"));
    assert_eq!(broker.metrics().channels_evicted.load(Relaxed), 1);
    // A subscribe makes room the same way: "first" is the quietest now.
    let _another = broker.subscribe("another", None, Resume::Live).unwrap();
    assert!(!has_channel(&broker, "first"));
    let stats = broker.stats();
    assert_eq!((stats.channels, stats.dormant_channels), (2, 1));
    assert_eq!(broker.metrics().channels_evicted.load(Relaxed), 2);
    check_ledger(&broker);
}

#[tokio::test(start_paused = true)]
async fn at_the_channel_limit_with_every_channel_subscribed_new_channels_are_refused() {
    let broker = broker_from(BrokerSettings {
        max_channels: 2,
        ..settings(100, 50)
    });
    let before = opening_cursor(&broker, "c");
    tokio::time::advance(Duration::from_secs(1)).await;
    let a = broker.subscribe("a", None, Resume::Live).unwrap();
    let mut b = broker.subscribe("b", None, Resume::Live).unwrap();
    let full = ChannelsFull { limit: 2 };
    assert_eq!(
        broker.subscribe("c", None, Resume::Live).unwrap_err(),
        SubscribeError::ChannelsFull(full)
    );
    assert_eq!(broker.publish("c", &event("x"), None), Err(full));
    // Nothing of a refused publish was accepted.
    assert_eq!(broker.metrics().events_published.load(Relaxed), 0);
    assert!(matches!(broker.relay_read(1, 10), RelayBatch::Events(e) if e.is_empty()));
    // A relayed event for a channel that cannot be made is dropped here.
    assert_eq!(
        broker.apply_remote(0xdef, 1, &Route::Channel("c".into()), &event("r")),
        0
    );
    assert_eq!(broker.metrics().channels_refused.load(Relaxed), 3);
    // Existing channels are not affected.
    broker.publish("b", &event("fine"), None).unwrap();
    assert_eq!(read_data(&mut b).await, ["fine"]);
    // Once a channel is gone there is room; a resume from before the dropped relayed
    // event cannot be vouched for.
    drop(a);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(resume(&broker, "c", &before), (true, vec![]));
    check_ledger(&broker);
}

/// A channel state evicted for the limit while its history was inside the window:
/// a new state for that channel must not claim to have seen everything since the
/// window began, or a resume from before the eviction would silently miss events.
#[tokio::test(start_paused = true)]
async fn a_channel_recreated_after_an_early_eviction_does_not_vouch_for_the_time_before() {
    let broker = broker_from(BrokerSettings {
        max_channels: 2,
        ..settings(100, 50)
    });
    let before = opening_cursor(&broker, "a");
    tokio::time::advance(Duration::from_secs(1)).await;
    broker.publish("a", &event("missed"), None).unwrap();
    let _b = broker.subscribe("b", None, Resume::Live).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // "c" needs room: "a" (dormant, event inside the window) is evicted.
    broker.publish("c", &event("c1"), None).unwrap();
    assert!(!has_channel(&broker, "a"));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(resume(&broker, "a", &before), (true, vec![]));
}

/// The same hazard through the byte limit: a dormant channel whose only event was
/// evicted for bytes is removed as idle; its next state must not vouch for the time
/// before.
#[tokio::test(start_paused = true)]
async fn a_channel_emptied_by_the_byte_limit_and_removed_does_not_vouch_for_the_time_before() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 2 * cost + cost / 2,
        ..settings(100, 50)
    });
    let before = opening_cursor(&broker, "q");
    tokio::time::advance(Duration::from_secs(1)).await;
    broker.publish("q", &event("q1"), None).unwrap();
    for data in ["b1", "b2", "b3"] {
        broker.publish("b", &event(data), None).unwrap();
    }
    assert_eq!(broker.expire(), 1, "q is left with nothing and removed");
    assert!(!has_channel(&broker, "q"));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(resume(&broker, "q", &before), (true, vec![]));
}

/// Events that left by age do not make new channel states distrust older cursors:
/// evicting a channel whose history is all older than the window is like expiry.
#[tokio::test(start_paused = true)]
async fn evicting_a_channel_whose_history_aged_out_keeps_resumes_exact() {
    let broker = broker_from(BrokerSettings {
        max_channels: 2,
        ..settings(100, 50)
    });
    broker.publish("old1", &event("1"), None).unwrap();
    broker.publish("old2", &event("2"), None).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    // Evicts "old1" to open (and then drop) "new".
    let before = opening_cursor(&broker, "new");
    tokio::time::advance(Duration::from_secs(1)).await;
    broker.publish("x", &event("x"), None).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // Evicts "old2", after the cursor was issued.
    broker.publish("new", &event("while-away"), None).unwrap();
    assert_eq!(broker.metrics().channels_evicted.load(Relaxed), 2);
    assert!(has_channel(&broker, "x"));
    assert_eq!(
        resume(&broker, "new", &before),
        (false, vec!["while-away".into()])
    );
}
