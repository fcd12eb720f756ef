use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::*;
use crate::event::{Cursor, Frontier, Publish, KEEP_ALIVE};
use fanout::WARM_AHEAD;

fn settings(replay_events: usize, buffer: usize) -> BrokerSettings {
    BrokerSettings {
        replay_events,
        replay_age: Duration::from_secs(60),
        subscriber_buffer: buffer,
        relay_queue_events: 1000,
        replay_max_bytes: 1 << 30,
        max_channels: 100_000,
        ..BrokerSettings::default()
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

/// A publish to every channel visits the channels with subscribers only: channels
/// kept for their history are neither locked nor appended to, so its cost does not
/// grow with them (security issue: 100,000 dormant channels held the lock for 1 s).
#[tokio::test(start_paused = true)]
async fn publish_all_passes_channels_without_subscribers_by() {
    let broker = broker();
    for i in 0..1000 {
        broker
            .publish(&format!("d{i}"), &event("old"), None)
            .unwrap();
    }
    let mut live = broker.subscribe("live", None, Resume::Live).unwrap();
    let before = broker.stats().history_events;
    let outcome = broker.publish_all(&event("hello"));
    assert_eq!((outcome.channels, outcome.delivered), (1, 1));
    assert_eq!(read_data(&mut live).await, ["hello"]);
    assert_eq!(broker.stats().history_events, before + 1);
    check_ledger(&broker);
    // A retry with the same id is a duplicate, found without looking into channels.
    let first = broker.publish_all(&with_id("x", "k1"));
    let retry = broker.publish_all(&with_id("x", "k1"));
    assert!(!first.duplicate && retry.duplicate);
}

/// A channel that had no subscriber when a publish to every channel passed it by
/// does not hold that event: a resume from before it gets `reset`, not a silent gap.
#[tokio::test(start_paused = true)]
async fn a_resume_across_a_publish_to_every_channel_that_passed_the_channel_by_gets_reset() {
    let broker = broker();
    let mut sub = broker.subscribe("d", None, Resume::Live).unwrap();
    broker.publish("d", &event("1"), None).unwrap();
    let Next::Data(bytes) = sub.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    drop(sub);
    tokio::time::advance(Duration::from_millis(5)).await;
    broker.publish_all(&event("to everyone"));
    tokio::time::advance(Duration::from_millis(5)).await;
    broker.publish("d", &event("2"), None).unwrap();
    assert_eq!(resume(&broker, "d", &cursor), (true, vec!["2".to_owned()]));
    // A channel that had a subscriber throughout got it and resumes exactly.
    let mut kept = broker.subscribe("k", None, Resume::Live).unwrap();
    broker.publish("k", &event("1"), None).unwrap();
    let Next::Data(bytes) = kept.next().await else {
        panic!()
    };
    let cursor = Cursor::parse(&last_id(&bytes).unwrap()).unwrap();
    broker.publish_all(&event("again"));
    assert_eq!(
        resume(&broker, "k", &cursor),
        (false, vec!["again".to_owned()])
    );
}

/// Within one millisecond (the paused clock never moves): a cursor taken just before
/// a loss carries the loss's own time, and must still get `reset`. CI once ran the
/// real-socket version of this in under a millisecond and resumed silently.
#[tokio::test(start_paused = true)]
async fn a_loss_in_the_same_millisecond_as_the_cursor_still_resets_it() {
    let cost = one_event_cost();
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: 2 * cost + states(&["old", "busy"]),
        ..settings(100, 50)
    });
    let published = broker.publish("old", &event("o1"), None).unwrap();
    let cursor = Cursor::parse(&published.id.unwrap()).unwrap();
    for n in 1..=3 {
        broker
            .publish("busy", &event(&format!("b{n}")), None)
            .unwrap();
    }
    assert!(
        !has_channel(&broker, "old"),
        "o1 was evicted with its channel"
    );
    assert_eq!(resume(&broker, "old", &cursor), (true, vec![]));

    // The same for a publish to every channel that passes a dormant channel by.
    let fresh = broker_with(100, 50);
    fresh.publish("d", &event("1"), None).unwrap();
    let cursor = opening_cursor(&fresh, "d");
    fresh.publish_all(&event("to everyone"));
    assert_eq!(resume(&fresh, "d", &cursor), (true, vec![]));
}

/// Reading the counts for `/metrics` and publishing to every channel wait for no
/// channel's lock: with a dormant channel's log held elsewhere, both still return.
#[test]
fn metrics_and_publish_all_do_not_visit_dormant_channels() {
    let broker = broker();
    broker.publish("dormant", &event("1"), None).unwrap();
    let channel = broker.state().channels.get("dormant").cloned().unwrap();
    let held = channel.log();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other = broker.clone();
    std::thread::spawn(move || {
        let stats = other.stats();
        let outcome = other.publish_all(&event("x"));
        let _ = done_tx.send((stats, outcome.channels, other.channels().len()));
    });
    let (stats, reached, listed) = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stats or publish_all waited for a dormant channel's lock");
    drop(held);
    assert_eq!(
        (stats.channels, stats.dormant_channels, stats.history_events),
        (0, 1, 1)
    );
    assert_eq!((reached, listed), (0, 0));
}

/// Channel states count against `--replay.maxBytes` with their history: a node made
/// to keep many channels of one small event each stays inside the bound.
#[tokio::test(start_paused = true)]
async fn channel_states_count_against_the_byte_limit() {
    let cost = one_event_cost();
    let max = 10 * (cost + states(&["c00"]));
    let broker = broker_from(BrokerSettings {
        replay_max_bytes: max,
        ..settings(100, 50)
    });
    for i in 0..50 {
        broker
            .publish(&format!("c{i:02}"), &event("e"), None)
            .unwrap();
        check_ledger(&broker);
    }
    let stats = broker.stats();
    assert!(
        stats.history_bytes + stats.channel_state_bytes <= max,
        "{stats:?} over {max}"
    );
    // Ten fit, or nine once sequence numbers (in each cursor) grow a digit.
    let kept = broker.state().channels.len();
    assert!((9..=10).contains(&kept), "{kept} channel states kept");
}

/// Assigned client ids are not a counter, and never one a chosen id already holds.
#[tokio::test(start_paused = true)]
async fn an_assigned_client_id_is_never_one_a_chosen_id_holds() {
    let broker = broker();
    let next = broker.shared.next_subscriber.load(Relaxed);
    // Take the id the next subscription would be assigned, as a chosen id, first.
    let squatted = broker.client_id_candidate(next + 1, 0);
    let squatter = broker
        .subscribe("room", Some(&squatted), Resume::Live)
        .unwrap();
    let assigned = broker.subscribe("room", None, Resume::Live).unwrap();
    assert_ne!(assigned.client_id(), squatter.client_id());
    assert_eq!(
        assigned.client_id(),
        broker.client_id_candidate(next + 1, 1)
    );
    // No counter in it, and another node (another key) gives other ids.
    let other = broker_with(100, 50);
    let theirs = other.subscribe("room", None, Resume::Live).unwrap();
    assert!(!assigned.client_id().ends_with(&format!("-{}", next + 1)));
    assert_ne!(theirs.client_id(), broker.client_id_candidate(next, 0));
    let published = broker
        .publish("room", &event("private"), Some(assigned.client_id()))
        .unwrap();
    assert_eq!(published.delivered, 1);
}

/// A cursor this cluster could not have issued gets `reset`, and the stream then
/// gets every later event: taken as seen, it would have silenced its origin for good.
#[tokio::test(start_paused = true)]
async fn a_forged_cursor_gets_reset_and_later_events() {
    let broker = broker();
    broker.publish("c", &event("0"), None).unwrap();
    let origin = broker.origin();
    let max = u64::MAX;
    let now = broker.now_ms();
    let forged = [
        format!("{max}~{origin:x}.{max}"),
        format!("{now}~{origin:x}.9999"), // a sequence not assigned yet
        format!("{}~{origin:x}.1", now + 7_200_000), // two hours ahead
        format!("{now}~def.{}", 1000 + 1), // past what was seen of def, and a queue
    ];
    for id in &forged {
        let cursor = Cursor::parse(id).unwrap();
        let mut sub = broker.subscribe("c", None, Resume::From(&cursor)).unwrap();
        let preamble = String::from_utf8(sub.take_preamble().unwrap().to_vec()).unwrap();
        assert!(preamble.starts_with("event: reset\n"), "{id}: {preamble}");
        broker.publish("c", &event("later"), None).unwrap();
        assert_eq!(read_data(&mut sub).await, ["later"], "{id}");
    }
    assert_eq!(broker.metrics().forged_cursors.load(Relaxed), 4);
    // What was issued, or seen of another origin, still resumes exactly.
    broker.relayed(0xdef, 1, Some("c"), &event("r"));
    let now = broker.now_ms();
    let seq = broker.accepted_seq();
    let fine = Cursor::parse(&format!("{now}~{origin:x}.{seq}~def.{}", 1 + 1000)).unwrap();
    assert_eq!(resume(&broker, "c", &fine), (false, vec![]));
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
/// What the states of these channels count against `--replay.maxBytes`.
fn states(names: &[&str]) -> usize {
    names
        .iter()
        .map(|name| super::ledger::channel_cost(name))
        .sum()
}

fn check_ledger(broker: &Broker) {
    let state = broker.state();
    let (mut bytes, mut fronts, mut dormant) = (0, 0, 0);
    let (mut events, mut state_bytes, mut live) = (0, 0, 0);
    let mut oldest: Option<u64> = None;
    for channel in state.channels.values() {
        let log = channel.log();
        assert!(!log.removed, "{} is removed but still mapped", channel.name);
        let sum: usize = log.entries.iter().map(|e| e.cost()).sum();
        assert_eq!(log.bytes, sum, "bytes of {}", channel.name);
        bytes += sum;
        events += log.entries.len();
        state_bytes += super::ledger::channel_cost(&channel.name);
        live += usize::from(!log.subscribers.is_empty());
        if let Some(front) = log.entries.front() {
            fronts += 1;
            oldest = Some(oldest.map_or(front.stamp, |o| o.min(front.stamp)));
        }
        if log.subscribers.is_empty() {
            dormant += 1;
        }
    }
    assert_eq!(state.ledger.bytes, bytes);
    assert_eq!(state.ledger.events, events);
    assert_eq!(state.ledger.state_bytes, state_bytes);
    assert_eq!(
        (state.ledger.live_count(), state.ledger.dormant_count()),
        (live, dormant)
    );
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
        replay_max_bytes: 4 * cost + cost / 2 + states(&["a", "b", "c"]),
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
        replay_max_bytes: 2 * cost + cost / 2 + states(&["a", "b"]),
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
        replay_max_bytes: 3 * cost + states(&["a"]),
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
        replay_max_bytes: 12 * cost + states(&["c0"; 5]),
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
                broker.relayed(0xdef, relayed, Some(&channel), &event("r"));
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
    assert_eq!(broker.accepted_seq(), 0);
    // A relayed event for a channel that cannot be made is dropped here.
    assert_eq!(broker.relayed(0xdef, 1, Some("c"), &event("r")), 0);
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
        replay_max_bytes: 2 * cost + cost / 2 + states(&["q", "b"]),
        ..settings(100, 50)
    });
    let before = opening_cursor(&broker, "q");
    tokio::time::advance(Duration::from_secs(1)).await;
    broker.publish("q", &event("q1"), None).unwrap();
    for data in ["b1", "b2", "b3"] {
        broker.publish("b", &event(data), None).unwrap();
    }
    assert!(
        !has_channel(&broker, "q"),
        "q is left with nothing and removed with its last event"
    );
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

/// A socket for direct writes: it takes at most `room` more bytes (then says
/// `WouldBlock`); `bytes` is everything the client would have read, from direct
/// writes and from the subscriber's task alike.
#[derive(Default)]
struct FakeSocket {
    bytes: Mutex<Vec<u8>>,
    room: Mutex<usize>,
    /// Runs at the start of the next direct write: another publisher's append
    /// landing while this one writes outside the locks.
    during_write: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The socket's number, and the journal it notes its warms and writes in.
    journal: Option<(usize, Journal)>,
}

/// Warms and writes of several sockets, in order: (socket number, written?).
type Journal = Arc<Mutex<Vec<(usize, bool)>>>;

impl FakeSocket {
    fn with_room(room: usize) -> Arc<Self> {
        let socket = Arc::new(FakeSocket::default());
        *socket.room.lock().unwrap() = room;
        socket
    }

    /// The subscriber's task writes a chunk (it waits for room as long as it takes).
    fn task_writes(&self, chunk: &[u8]) {
        self.bytes.lock().unwrap().extend_from_slice(chunk);
    }

    fn text(&self) -> String {
        String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
    }
}

impl Sink for FakeSocket {
    fn warm(&self) {
        if let Some((me, journal)) = &self.journal {
            journal.lock().unwrap().push((*me, false));
        }
    }

    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some((me, journal)) = &self.journal {
            journal.lock().unwrap().push((*me, true));
        }
        let hook = self.during_write.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(*room);
        *room -= n;
        self.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The blocks of an SSE byte stream, each checked to be whole: a keep-alive
/// comment, or an event with an `id:` and one `data:` line. A byte out of place
/// (two writers interleaving, a lost or repeated part of a frame) breaks one.
fn whole_blocks(text: &str) -> Vec<String> {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "cut short: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|block| {
            let lines: Vec<&str> = block.lines().collect();
            let ok = block == ": keep-alive"
                || (lines.len() == 2
                    && lines[0].starts_with("id: ")
                    && lines[1].starts_with("data: "));
            assert!(ok, "broken block {block:?} in {text:?}");
            block.to_owned()
        })
        .collect()
}

#[test]
fn a_parked_subscriber_with_a_sink_is_written_to_without_a_wake() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    sub.take_preamble();
    let socket = FakeSocket::with_room(usize::MAX);
    sub.attach(socket.clone());
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(sub.poll_next(&mut cx).is_pending());

    broker.publish("c", &event("1"), None).unwrap();
    broker.publish("c", &event("2"), None).unwrap();
    assert_eq!(wakes.0.load(Relaxed), 0, "written directly, not woken");
    assert_eq!(data_lines(socket.text().as_bytes()), ["1", "2"]);
    // Nothing is given to the task twice.
    assert!(sub.poll_next(&mut cx).is_pending());
    assert_eq!(broker.metrics().events_delivered.load(Relaxed), 2);
}

#[test]
fn a_fan_out_warms_each_sink_shortly_before_writing_to_it() {
    const SUBSCRIBERS: usize = 40;
    let broker = broker();
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let journal = Arc::new(Mutex::new(Vec::new()));
    let mut subs = Vec::new();
    for me in 0..SUBSCRIBERS {
        let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
        sub.take_preamble();
        let socket = Arc::new(FakeSocket {
            journal: Some((me, journal.clone())),
            ..FakeSocket::default()
        });
        *socket.room.lock().unwrap() = usize::MAX;
        sub.attach(socket);
        assert!(sub.poll_next(&mut cx).is_pending());
        subs.push(sub);
    }
    broker.publish("c", &event("1"), None).unwrap();
    let journal = journal.lock().unwrap();
    let mut warmed = [false; SUBSCRIBERS];
    let mut written = [false; SUBSCRIBERS];
    let mut most_ahead = 0;
    for &(me, write) in journal.iter() {
        if write {
            assert!(warmed[me], "{me} written before it was warmed: {journal:?}");
            assert!(!written[me], "{me} written twice");
            written[me] = true;
        } else {
            warmed[me] = true;
        }
        let ahead = (0..SUBSCRIBERS)
            .filter(|&s| warmed[s] && !written[s])
            .count();
        most_ahead = most_ahead.max(ahead);
    }
    assert!(written.iter().all(|&w| w), "every subscriber written");
    // Warmed a batch at a time, not all before the first write: the first ones'
    // lines would be gone again by the time the last were written.
    assert_eq!(most_ahead, WARM_AHEAD, "{journal:?}");
}

#[test]
fn subscribers_leaving_and_joining_during_direct_writes_leave_the_others_parked() {
    let broker = broker();
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut subs = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
        sub.take_preamble();
        let socket = FakeSocket::with_room(usize::MAX);
        sub.attach(socket.clone());
        assert!(sub.poll_next(&mut cx).is_pending());
        subs.push(sub);
        sockets.push(socket);
    }
    // While the first is being written to, the second leaves and a fourth joins.
    let leaving = Arc::new(Mutex::new(Some(subs.remove(1))));
    let joined = Arc::new(Mutex::new(None));
    {
        let (leaving, joined, broker) = (leaving.clone(), joined.clone(), broker.clone());
        *sockets[0].during_write.lock().unwrap() = Some(Box::new(move || {
            drop(leaving.lock().unwrap().take());
            *joined.lock().unwrap() = Some(broker.subscribe("c", None, Resume::Live).unwrap());
        }));
    }
    broker.publish("c", &event("1"), None).unwrap();
    assert!(leaving.lock().unwrap().is_none(), "the hook ran");
    // The two that stayed are parked again: the next event is written to them
    // directly too, with no wake.
    broker.publish("c", &event("2"), None).unwrap();
    assert_eq!(wakes.0.load(Relaxed), 0);
    for i in [0, 2] {
        assert_eq!(data_lines(sockets[i].text().as_bytes()), ["1", "2"], "{i}");
    }
    // The newcomer's task takes the second event itself.
    let mut newcomer = joined.lock().unwrap().take().expect("joined");
    newcomer.take_preamble();
    let Poll::Ready(Next::Data(chunk)) = newcomer.poll_next(&mut cx) else {
        panic!("the newcomer gets the event published after it joined");
    };
    assert_eq!(data_lines(&chunk), ["2"]);
}

#[test]
fn what_a_full_socket_does_not_take_goes_out_first_from_the_task() {
    let broker = broker();
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    sub.take_preamble();
    let socket = FakeSocket::with_room(10);
    sub.attach(socket.clone());
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(sub.poll_next(&mut cx).is_pending());

    // The first event is cut after 10 bytes; the task is woken for the rest.
    broker.publish("c", &event("first"), None).unwrap();
    assert_eq!(socket.bytes.lock().unwrap().len(), 10);
    assert_eq!(wakes.0.load(Relaxed), 1);
    // The next event, published before the task runs, waits for the task.
    broker.publish("c", &event("second"), None).unwrap();
    assert_eq!(socket.bytes.lock().unwrap().len(), 10);
    while let Poll::Ready(Next::Data(chunk)) = sub.poll_next(&mut cx) {
        socket.task_writes(&chunk);
    }
    let text = socket.text();
    assert_eq!(whole_blocks(&text).len(), 2);
    assert_eq!(data_lines(text.as_bytes()), ["first", "second"]);

    // A socket with no room at all leaves the whole event to the task.
    *socket.room.lock().unwrap() = 0;
    broker.publish("c", &event("third"), None).unwrap();
    assert_eq!(wakes.0.load(Relaxed), 2);
    let Poll::Ready(Next::Data(chunk)) = sub.poll_next(&mut cx) else {
        panic!("the task writes the event the socket refused");
    };
    socket.task_writes(&chunk);
    assert_eq!(
        data_lines(socket.text().as_bytes()),
        ["first", "second", "third"]
    );
}

#[test]
fn closing_the_streams_ends_parked_and_running_subscriptions() {
    let broker = broker();
    let mut parked = broker.subscribe("c", None, Resume::Live).unwrap();
    let mut running = broker.subscribe("d", None, Resume::Live).unwrap();
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    parked.take_preamble();
    assert!(parked.poll_next(&mut cx).is_pending());
    broker.close_streams();
    assert_eq!(wakes.0.load(Relaxed), 1);
    assert!(matches!(
        parked.poll_next(&mut cx),
        Poll::Ready(Next::Closed)
    ));
    assert!(matches!(
        running.poll_next(&mut cx),
        Poll::Ready(Next::Closed)
    ));
    // A subscription opened afterwards ends at once too.
    let mut late = broker.subscribe("e", None, Resume::Live).unwrap();
    assert!(matches!(late.poll_next(&mut cx), Poll::Ready(Next::Closed)));
}

#[tokio::test(start_paused = true)]
async fn keep_alives_go_only_to_subscribers_silent_for_the_interval() {
    let interval = Duration::from_secs(10);
    let broker = broker();
    let mut quiet = broker.subscribe("quiet", None, Resume::Live).unwrap();
    let mut busy = broker.subscribe("busy", None, Resume::Live).unwrap();
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (quiet_wakes, quiet_waker) = counting_waker();
    let mut quiet_cx = Context::from_waker(&quiet_waker);
    assert!(quiet.poll_next(&mut quiet_cx).is_pending());
    assert!(busy.poll_next(&mut cx).is_pending());

    tokio::time::advance(Duration::from_secs(6)).await;
    broker.publish("busy", &event("x"), None).unwrap();
    assert!(matches!(
        busy.poll_next(&mut cx),
        Poll::Ready(Next::Data(_))
    ));
    assert!(busy.poll_next(&mut cx).is_pending());
    assert_eq!(broker.keep_alive(interval), 0, "nobody silent for 10 s yet");

    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(broker.keep_alive(interval), 1, "only the quiet one");
    assert_eq!(quiet_wakes.0.load(Relaxed), 1);
    match quiet.poll_next(&mut cx) {
        Poll::Ready(Next::Data(bytes)) => assert_eq!(&bytes[..], KEEP_ALIVE),
        other => panic!("expected a keep-alive, got {other:?}"),
    }
    assert!(quiet.poll_next(&mut cx).is_pending());
    assert!(busy.poll_next(&mut cx).is_pending());
    // The comment counts as sending: the next is one interval later.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(broker.keep_alive(interval), 1, "busy's turn");
    assert!(quiet.poll_next(&mut cx).is_pending());
}

#[derive(Debug, Clone)]
enum DirectOp {
    /// Publish to the channel, or to one of the two clients.
    Publish(Option<usize>),
    /// Publish (to the channel or a client) while the next direct write to a
    /// subscriber's socket is under way.
    PublishDuringWrite(usize, Option<usize>),
    /// Give a subscriber's socket this much more room.
    Room(usize, usize),
    /// A subscriber's task runs: it writes everything it is given.
    Poll(usize),
    /// Time passes and the node's keep-alive tick runs.
    Tick(u64),
}

fn direct_op() -> impl proptest::strategy::Strategy<Value = DirectOp> {
    use proptest::prelude::*;
    prop_oneof![
        3 => proptest::option::of(0..2usize).prop_map(DirectOp::Publish),
        1 => (0..2usize, proptest::option::of(0..2usize))
            .prop_map(|(s, t)| DirectOp::PublishDuringWrite(s, t)),
        2 => (0..2usize, 0..120usize).prop_map(|(s, n)| DirectOp::Room(s, n)),
        3 => (0..2usize).prop_map(DirectOp::Poll),
        1 => (0..8_000u64).prop_map(DirectOp::Tick),
    ]
}

proptest::proptest! {
    /// Whatever the order of appends, partial and refused direct writes, task polls
    /// and keep-alive ticks, each subscriber's socket carries whole frames: every
    /// event for it exactly once and in order, with keep-alive comments only
    /// between them.
    #[test]
    fn direct_writes_and_the_task_never_interleave_lose_or_repeat(
        ops in proptest::collection::vec(direct_op(), 1..80)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let broker = broker_with(1000, 1000);
            let clients = ["a", "b"];
            let mut subs: Vec<Subscription> = clients
                .iter()
                .map(|c| broker.subscribe("c", Some(c), Resume::Live).unwrap())
                .collect();
            let sockets: Vec<Arc<FakeSocket>> = subs
                .iter_mut()
                .map(|sub| {
                    sub.take_preamble();
                    let socket = FakeSocket::with_room(0);
                    sub.attach(socket.clone());
                    socket
                })
                .collect();
            let (_, waker) = counting_waker();
            let mut cx = Context::from_waker(&waker);
            let expected = Arc::new(Mutex::new(vec![Vec::new(), Vec::new()]));
            // Publishes `data`, first noting who must receive it.
            let publish = {
                let broker = broker.clone();
                let expected = expected.clone();
                move |data: String, target: Option<usize>| {
                    for (i, list) in expected.lock().unwrap().iter_mut().enumerate() {
                        if target.is_none_or(|t| t == i) {
                            list.push(data.clone());
                        }
                    }
                    broker
                        .publish("c", &event(&data), target.map(|t| clients[t]))
                        .unwrap();
                }
            };
            let drain = |sub: &mut Subscription, socket: &FakeSocket, cx: &mut Context<'_>| {
                while let Poll::Ready(next) = sub.poll_next(cx) {
                    match next {
                        Next::Data(chunk) => socket.task_writes(&chunk),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            };
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    DirectOp::Publish(target) => publish(n.to_string(), target),
                    DirectOp::PublishDuringWrite(i, target) => {
                        let publish = publish.clone();
                        *sockets[i].during_write.lock().unwrap() =
                            Some(Box::new(move || publish(format!("{n}w"), target)));
                    }
                    DirectOp::Room(i, more) => *sockets[i].room.lock().unwrap() += more,
                    DirectOp::Poll(i) => drain(&mut subs[i], &sockets[i], &mut cx),
                    DirectOp::Tick(ms) => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        broker.keep_alive(Duration::from_secs(5));
                    }
                }
            }
            for (i, sub) in subs.iter_mut().enumerate() {
                drain(sub, &sockets[i], &mut cx);
                let text = sockets[i].text();
                whole_blocks(&text);
                assert_eq!(data_lines(text.as_bytes()), expected.lock().unwrap()[i], "{text:?}");
            }
        });
    }
}

/// Nodes 0xa and 0xb, each with a subscriber of channel `c` (kept), and `a1`..`a3`
/// published on node a and not yet relayed.
fn two_nodes_after_a_published_three() -> (Broker, Broker, [Subscription; 2]) {
    let settings = settings(100, 50);
    let clock = Clock::starting_at(1_000_000);
    let metrics = || Arc::new(Metrics::default());
    let a = Broker::new(0xa, clock, settings.clone(), metrics());
    let b = Broker::new(0xb, clock, settings, metrics());
    let keep = [
        a.subscribe("c", None, Resume::Live).unwrap(),
        b.subscribe("c", None, Resume::Live).unwrap(),
    ];
    for n in 1..=3 {
        a.publish("c", &event(&format!("a{n}")), None).unwrap();
    }
    (a, b, keep)
}

#[tokio::test]
async fn a_resume_ahead_of_this_node_skips_the_events_it_saw_elsewhere_when_they_arrive() {
    let (a, b, _keep) = two_nodes_after_a_published_three();
    // A subscriber read a1..a3 on node a; node b has only a1 so far.
    let cursor = opening_cursor(&a, "c");
    let relay = |seq: u64| b.relayed(0xa, seq, Some("c"), &event(&format!("a{seq}")));
    relay(1);
    let mut moved = b.subscribe("c", None, Resume::From(&cursor)).unwrap();
    let preamble = moved.take_preamble().unwrap();
    assert!(
        data_lines(&preamble).is_empty(),
        "nothing to replay: {preamble:?}"
    );
    assert!(!String::from_utf8_lossy(&preamble).contains("reset"));
    // Its cursor keeps covering a3, or its next resume elsewhere would repeat a2, a3.
    let covers_a = |bytes: &[u8]| {
        let cursor = Cursor::parse(&last_id(bytes).expect("an id")).unwrap();
        cursor.frontier.get(0xa)
    };
    assert_eq!(covers_a(&preamble), 3);
    // a2 and a3 reach b late: not again for this subscriber; a4 is new to it.
    relay(2);
    let (_, waker) = counting_waker();
    assert!(moved
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());
    relay(3);
    relay(4);
    let Next::Data(bytes) = moved.next().await else {
        panic!("expected data");
    };
    assert_eq!(data_lines(&bytes), ["a4"]);
    assert_eq!(covers_a(&bytes), 4);
    b.publish("c", &event("b1"), None).unwrap();
    assert_eq!(read_data(&mut moved).await, ["b1"]);
}

mod batch;

#[tokio::test]
async fn events_replayed_to_a_resume_ahead_of_this_node_carry_ids_covering_what_it_saw() {
    let (a, b, _keep) = two_nodes_after_a_published_three();
    // A subscriber read a1..a3 on node a; node b has a1 and its own b1, b2.
    let cursor = opening_cursor(&a, "c");
    b.relayed(0xa, 1, Some("c"), &event("a1"));
    b.publish("c", &event("b1"), None).unwrap();
    b.publish("c", &event("b2"), None).unwrap();
    let mut moved = b.subscribe("c", None, Resume::From(&cursor)).unwrap();
    let preamble = String::from_utf8(moved.take_preamble().unwrap().to_vec()).unwrap();
    assert_eq!(data_lines(preamble.as_bytes()), ["b1", "b2"]);
    // Every replayed event's id keeps a3: a client cut off after b1 and resuming
    // elsewhere with b1's id must not be sent a2 and a3 again.
    for block in preamble.split_terminator("\n\n") {
        let id = block
            .lines()
            .find_map(|line| line.strip_prefix("id: "))
            .expect("an id");
        let cursor = Cursor::parse(id).unwrap();
        assert_eq!(cursor.frontier.get(0xa), 3, "{block:?}");
    }
}

/// A resume whose cursor has an origin that ended (its node came back as a new
/// process) short of what that origin announced starts with a reset on a node that
/// never applied the rest: nothing will ever bring it. On a node that applied it all
/// the same cursor resumes exactly, and so does one that already has all of it.
#[tokio::test(start_paused = true)]
async fn a_resume_short_of_an_ended_origin_the_node_lacks_gets_a_reset() {
    let lacking = broker();
    let holding = broker();
    for b in [&lacking, &holding] {
        b.subscribe("g.c", None, Resume::Live)
            .unwrap()
            .take_preamble();
        b.relayed(0xa, 1, Some("g.c"), &event("a1"));
    }
    // The other node got the ended origin's later events (on another channel).
    holding.relayed(0xa, 2, Some("g.d"), &event("a2"));
    holding.relayed(0xa, 3, Some("g.d"), &event("a3"));
    let now = lacking.now_ms();
    let behind = Cursor::parse(&format!("{now}~a.1")).unwrap();
    let level = Cursor::parse(&format!("{now}~a.3")).unwrap();
    // Before the origin is known to have ended, both resume exactly: its later
    // events may still come.
    assert_eq!(resume(&lacking, "g.c", &behind), (false, vec![]));
    for b in [&lacking, &holding] {
        b.note_gone(0xa, 3);
    }
    assert_eq!(resume(&lacking, "g.c", &behind), (true, vec![]));
    assert_eq!(resume(&holding, "g.c", &behind), (false, vec![]));
    assert_eq!(resume(&lacking, "g.c", &level), (false, vec![]));
    // A pattern stream is judged the same way.
    let pattern = |b: &Broker, cursor: &Cursor| {
        let set = super::multi_cursor::set_digest(&["g.*"]);
        let id = super::multi_cursor::encode(set, std::slice::from_ref(cursor));
        let mut stream = b.subscribe_many(&["g.*"], None, Some(&id)).unwrap();
        let preamble = stream.take_preamble().unwrap();
        String::from_utf8(preamble.to_vec())
            .unwrap()
            .starts_with("event: reset\n")
    };
    assert!(pattern(&lacking, &behind));
    assert!(!pattern(&holding, &behind));
}

/// A node holds a live origin's events only from its first pull of it on, and
/// cannot tell the events before it that a client lacks from those the origin
/// published on other channels: a resume short of them is not reset (a rolling
/// restart would reset most streams that move to the restarted node). Only an
/// origin that ended is judged (see the test above).
#[tokio::test(start_paused = true)]
async fn a_resume_short_of_a_live_origins_events_before_the_first_pull_is_not_reset() {
    let b = broker();
    b.subscribe("c", None, Resume::Live)
        .unwrap()
        .take_preamble();
    // Origin a: the first event pulled is its fifth (1-4 came before this node).
    b.relayed(0xa, 5, Some("c"), &event("a5"));
    b.note_announced(0xb, 7);
    let cursor = |text: &str| Cursor::parse(&format!("{}~{text}", b.now_ms())).unwrap();
    assert_eq!(
        resume(&b, "c", &cursor("a.2")),
        (false, vec!["a5".to_string()])
    );
    assert_eq!(
        resume(&b, "c", &cursor("b.3")),
        (false, vec!["a5".to_string()])
    );
    // Once a is known to have ended short of what this node applied, the same
    // cursors are judged against that.
    b.note_gone(0xa, 9);
    assert_eq!(
        resume(&b, "c", &cursor("a.2")),
        (true, vec!["a5".to_string()])
    );
    assert!(resume(&b, "c", &cursor("b.3")).0);
}

/// An id carries how far its node is caught up on every origin it follows, not the
/// time alone: a node that lags behind an origin (a cut, a slow link) issues ids
/// that another node, lacking what came before, does not vouch for. Ticks from the
/// origin's relay bring the ids up to now again; an origin that ended no longer
/// holds them back.
#[tokio::test(start_paused = true)]
async fn ids_wait_for_an_origin_this_node_lags_behind() {
    let lagging = broker();
    let t0 = lagging.now_ms();
    lagging.follow_origins(&[(0xb, t0)]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let time_of = |b: &Broker| {
        let id = b.publish("c", &event("x"), None).unwrap().id.unwrap();
        Cursor::parse(&id).unwrap().time_ms
    };
    assert_eq!(time_of(&lagging), t0, "nothing of b applied since t0");
    // The opening id of a new stream says the same.
    assert_eq!(opening_cursor(&lagging, "c").time_ms, t0);
    let stale =
        Cursor::parse(&lagging.publish("c", &event("y"), None).unwrap().id.unwrap()).unwrap();
    // A node that started after t0 cannot vouch for that id: it lacks b's events
    // from before its start, which the client may lack too.
    let other = Broker::new(
        0xdef,
        Clock::starting_at(lagging.now_ms()),
        settings(100, 50),
        Arc::new(Metrics::default()),
    );
    assert!(resume(&other, "c", &stale).0, "the lagging id is reset");
    lagging.relay_tick(0xb, t0 + 9_000);
    assert_eq!(time_of(&lagging), t0 + 9_000);
    lagging.relay_tick(0xb, t0 + 60_000);
    assert_eq!(
        time_of(&lagging),
        lagging.now_ms(),
        "a tick is capped at now"
    );
    let fresh =
        Cursor::parse(&lagging.publish("c", &event("z"), None).unwrap().id.unwrap()).unwrap();
    assert!(!resume(&other, "c", &fresh).0, "a caught-up id resumes");
    // Lagging again; then b ends for good (restarted as a new origin).
    lagging.follow_origins(&[(0xb, 0), (0xd, t0)]);
    assert_eq!(time_of(&lagging), t0);
    lagging.relay_untimed(0xd);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(time_of(&lagging), t0 + 10_000, "b's last tick");
    lagging.note_gone(0xb, 0);
    assert_eq!(time_of(&lagging), lagging.now_ms());
}
