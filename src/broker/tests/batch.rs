//! Batches (`publish_batch`, `publish_all_batch`) against the same events published
//! one at a time: every answer, the history, the ledger and the relay outbox agree.

use std::sync::Mutex;

use super::*;

/// An outlet that keeps what the broker hands it (route, as its debug text), in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(u64, String, Publish)>>);

impl Outlet for Recorder {
    fn accepted(&self, _accepted_ms: u64, event: Accepted<'_>) {
        let route = format!("{:?}", event.route);
        let kept = (event.seq, route, event.publish.clone());
        self.0.lock().unwrap().push(kept);
    }

    fn flush(&self) {}
}

impl Recorder {
    fn taken(&self) -> Vec<(u64, String, Publish)> {
        self.0.lock().unwrap().clone()
    }
}

fn recorded(settings: BrokerSettings) -> (Broker, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let broker = Broker::with_outlet(
        0xabc,
        Clock::starting_at(1_000_000),
        settings,
        Arc::new(Metrics::default()),
        recorder.clone(),
    );
    (broker, recorder)
}

/// The same events, twice over: what a batch is held to.
fn events() -> Vec<Publish> {
    vec![
        with_id("a1", "x"),
        event("a2"),
        with_id("a3", "y"),
        // A retry inside the batch of an id the batch itself just took.
        with_id("a1 again", "x"),
        event("a4"),
        // Published before the batch (see `history_before`): a retry across batches.
        with_id("old again", "old"),
        event("a5"),
        Publish {
            event: Some("note".into()),
            retry: Some(500),
            ..with_id("a6", "z")
        },
        event("a7"),
    ]
}

/// Everything of a broker that a batch must leave as single publishes would.
#[derive(Debug, PartialEq)]
struct Observed {
    answers: Vec<Published>,
    /// What a subscriber that was waiting read, in order.
    read: Vec<String>,
    /// A resume of each channel from its cursor before the events.
    replay: Vec<String>,
    stats: BrokerStats,
    /// What the broker handed the relay.
    outbox: Vec<(u64, String, Publish)>,
    last_seq: u64,
}

/// A broker small enough that the events evict history, per channel
/// (`--replay.events` 7) and across channels (the byte bound), with room for a
/// subscriber to take all seven new events at once.
fn small_broker() -> (Broker, Arc<Recorder>) {
    let cost = one_event_cost();
    recorded(BrokerSettings {
        replay_max_bytes: 6 * cost + states(&["c", "other"]),
        ..settings(7, 7)
    })
}

/// Runs `publish` on a fresh broker with a waiting subscriber on `c`, a dormant
/// channel `other` with history, and the id `old` already published to `c`.
async fn observe(publish: impl FnOnce(&Broker) -> Vec<Published>) -> Observed {
    let (broker, recorder) = small_broker();
    broker.publish("other", &event("o1"), None).unwrap();
    broker.publish("c", &with_id("old", "old"), None).unwrap();
    let before_c = opening_cursor(&broker, "c");
    let mut sub = broker.subscribe("c", None, Resume::Live).unwrap();
    sub.take_preamble();
    let answers = publish(&broker);
    check_ledger(&broker);
    let mut read = Vec::new();
    while let Ok(Next::Data(bytes)) =
        tokio::time::timeout(Duration::from_millis(10), sub.next()).await
    {
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with("\n\n"), "cut short: {text:?}");
        read.extend(text.split_terminator("\n\n").map(str::to_owned));
    }
    let (reset, data) = resume(&broker, "c", &before_c);
    let mut replay = vec![format!("reset: {reset}")];
    replay.extend(data);
    let stats = broker.stats();
    assert!(
        broker.metrics().history_evicted_events.load(Relaxed) > 0 && !has_channel(&broker, "other"),
        "the byte bound evicts across channels: {stats:?}"
    );
    let outbox = recorder.taken();
    let last_seq = broker.accepted_seq();
    drop(sub);
    Observed {
        answers,
        read,
        replay,
        stats,
        outbox,
        last_seq,
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_to_one_channel_leaves_what_single_publishes_leave() {
    let events = events();
    let single = observe(|broker| {
        events
            .iter()
            .map(|e| broker.publish("c", e, None).unwrap())
            .collect()
    })
    .await;
    let batch = observe(|broker| broker.publish_batch("c", &events, None).unwrap()).await;
    assert_eq!(batch, single);
    // And what they leave is what the contract asks for: the retries are
    // duplicates answered with the original's cursor, everything else is new.
    let duplicates: Vec<bool> = batch.answers.iter().map(|a| a.duplicate).collect();
    assert_eq!(
        duplicates,
        [false, false, false, true, false, true, false, false, false]
    );
    assert_eq!(batch.answers[3].id, batch.answers[0].id);
    let data: Vec<&str> = batch
        .read
        .iter()
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect();
    assert_eq!(data, ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]);
    // Seven new events after the two before: sequences 1 to 9, all handed over.
    assert_eq!(batch.last_seq, 9);
    let handed: Vec<u64> = batch.outbox.iter().map(|(seq, ..)| *seq).collect();
    assert_eq!(handed, (1..=9).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_batch_to_every_channel_leaves_what_single_publishes_leave() {
    let events = events();
    let single = observe(|broker| events.iter().map(|e| broker.publish_all(e)).collect()).await;
    let batch = observe(|broker| broker.publish_all_batch(&events)).await;
    assert_eq!(batch, single);
    let duplicates: Vec<bool> = batch.answers.iter().map(|a| a.duplicate).collect();
    assert_eq!(
        duplicates,
        [false, false, false, true, false, true, false, false, false]
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_to_one_client_reaches_only_that_client() {
    let broker = broker();
    let mut alice = broker
        .subscribe("room", Some("alice"), Resume::Live)
        .unwrap();
    let mut bob = broker.subscribe("room", Some("bob"), Resume::Live).unwrap();
    alice.take_preamble();
    bob.take_preamble();
    let answers = broker
        .publish_batch("room", &[event("1"), event("2")], Some("alice"))
        .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.delivered).collect::<Vec<_>>(),
        [1, 1]
    );
    broker.publish("room", &event("all"), None).unwrap();
    assert_eq!(read_data(&mut alice).await, ["1", "2", "all"]);
    assert_eq!(read_data(&mut bob).await, ["all"]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_refused_for_the_channel_limit_accepts_nothing() {
    let (broker, recorder) = recorded(BrokerSettings {
        max_channels: 1,
        ..settings(100, 50)
    });
    let _held = broker.subscribe("taken", None, Resume::Live).unwrap();
    assert!(broker
        .publish_batch("new", &[event("1"), event("2")], None)
        .is_err());
    assert_eq!(broker.accepted_seq(), 0);
    assert_eq!(recorder.taken(), []);
}
