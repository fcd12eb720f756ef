//! Streams of several channels: cursors that resume every channel exactly, on the
//! node that issued them or on another, against a model of what was published.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::event::Publish;

pub(super) fn broker(origin: Origin) -> Broker {
    let settings = BrokerSettings {
        replay_events: 1000,
        replay_age: Duration::from_secs(600),
        subscriber_buffer: 1000,
        relay_queue_events: 1000,
        replay_max_bytes: 1 << 30,
        max_channels: 1000,
        ..BrokerSettings::default()
    };
    Broker::new(
        origin,
        Clock::starting_at(1_000_000),
        settings,
        Arc::new(Metrics::default()),
    )
}

pub(super) fn number(n: u64) -> Publish {
    Publish {
        id: None,
        event: None,
        data: n.to_string(),
        retry: None,
    }
}

/// One block of a stream of several channels.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Block {
    pub(super) id: Option<String>,
    pub(super) event: Option<String>,
    /// The wrapped event's channel and data, if it is an event.
    pub(super) channel: Option<String>,
    pub(super) data: Option<serde_json::Value>,
}

pub(super) fn blocks(bytes: &[u8]) -> Vec<Block> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut parsed = Block {
            id: None,
            event: None,
            channel: None,
            data: None,
        };
        for line in block.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                parsed.id = Some(id.into());
            } else if let Some(event) = line.strip_prefix("event: ") {
                parsed.event = Some(event.into());
            } else if let Some(data) = line.strip_prefix("data: ") {
                let json: serde_json::Value = serde_json::from_str(data).expect("JSON");
                parsed.channel = json["channel"].as_str().map(str::to_owned);
                parsed.data = Some(json["data"].clone());
            }
        }
        if parsed.id.is_some() || parsed.data.is_some() {
            out.push(parsed);
        }
    }
    out
}

/// Everything the stream has now: its preamble, then each poll until it waits.
pub(super) fn drain(stream: &mut MultiSubscription) -> Vec<Block> {
    let mut out = stream.take_preamble().map_or_else(Vec::new, |p| blocks(&p));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        match stream.poll_next(&mut cx) {
            Poll::Ready(Next::Data(bytes)) => out.extend(blocks(&bytes)),
            Poll::Ready(other) => panic!("unexpected {other:?}"),
            Poll::Pending => return out,
        }
    }
}

/// Two nodes with a relay between them that delivers when told to.
struct Pair {
    nodes: [Broker; 2],
    /// Per node: its events not yet applied on the other, in sequence order.
    pending: [Vec<(u64, Option<String>, Publish)>; 2],
    seq: [u64; 2],
    next_value: u64,
    /// Every channel's events, as published.
    model: BTreeMap<String, Vec<u64>>,
    /// The node each value was published on.
    published_on: BTreeMap<u64, usize>,
    /// Plain subscribers on both nodes, so every channel is live everywhere.
    _keep: Vec<Subscription>,
}

impl Pair {
    fn new(channels: &[&str]) -> Pair {
        let nodes = [broker(0xa1), broker(0xb2)];
        let mut keep = Vec::new();
        for node in &nodes {
            for channel in channels {
                keep.push(node.subscribe(channel, None, Resume::Live).unwrap());
            }
        }
        Pair {
            nodes,
            pending: [Vec::new(), Vec::new()],
            seq: [0, 0],
            next_value: 1,
            model: channels
                .iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect(),
            published_on: BTreeMap::new(),
            _keep: keep,
        }
    }

    /// Publishes the next value on `node`, to `channel` or (`None`) every channel.
    fn publish(&mut self, node: usize, channel: Option<&str>) {
        let value = self.next_value;
        self.next_value += 1;
        self.published_on.insert(value, node);
        let publish = number(value);
        let route = match channel {
            Some(channel) => {
                self.nodes[node].publish(channel, &publish, None).unwrap();
                self.model.get_mut(channel).unwrap().push(value);
                Some(channel.to_owned())
            }
            None => {
                self.nodes[node].publish_all(&publish);
                self.model.values_mut().for_each(|list| list.push(value));
                None
            }
        };
        self.seq[node] += 1;
        self.pending[node].push((self.seq[node], route, publish));
    }

    /// Relays `node`'s pending events to the other node.
    fn flush(&mut self, node: usize) {
        let origin = self.nodes[node].origin();
        for (seq, route, publish) in std::mem::take(&mut self.pending[node]) {
            self.nodes[1 - node].relayed(origin, seq, route.as_deref(), &publish);
        }
    }
}

/// Adds the events of `blocks` to `got`, per channel; checks that no block is a
/// broker signal.
fn record(got: &mut BTreeMap<String, Vec<u64>>, blocks: &[Block]) {
    for block in blocks {
        assert_eq!(block.event, None, "{block:?}");
        if let (Some(channel), Some(data)) = (&block.channel, &block.data) {
            let value = data.as_u64().expect("a number");
            got.entry(channel.clone()).or_default().push(value);
        }
    }
}

/// Cuts `seen` (what a stream delivered) after `cut` events, resumes from the id
/// the client then holds on node `on`, flushes the relay both ways and reads the
/// resumed stream to its end: what was cut plus what was resumed must be the
/// model, per channel, as a set with no repeats, each origin's events in order.
fn check_resume(pair: &mut Pair, channels: &[&str], seen: &[Block], cut: usize, on: usize) {
    let mut got = BTreeMap::new();
    let id = seen.first().and_then(|b| b.id.clone()).expect("opening id");
    let id = cut_at(&mut got, seen, cut, id);
    resume_and_check(pair, channels, got, &id, on);
}

/// Adds the first `cut` events of `seen` to `got`; returns the id the client holds
/// after them (`id` if none).
fn cut_at(
    got: &mut BTreeMap<String, Vec<u64>>,
    seen: &[Block],
    cut: usize,
    mut id: String,
) -> String {
    let events: Vec<&Block> = seen.iter().filter(|b| b.data.is_some()).collect();
    for block in events.iter().take(cut) {
        record(got, std::slice::from_ref(*block));
        id = block.id.clone().expect("every event has an id");
    }
    id
}

/// Resumes from `id` on node `on` a client that has had `got`, then checks (see
/// [`check_resume`]).
fn resume_and_check(
    pair: &mut Pair,
    channels: &[&str],
    mut got: BTreeMap<String, Vec<u64>>,
    id: &str,
    on: usize,
) {
    let mut resumed = pair.nodes[on]
        .subscribe_many(channels, None, Some(id))
        .expect("resume");
    let mut after = drain(&mut resumed);
    // An event of the resuming node itself, before the relay has caught it up with
    // what the stream saw elsewhere.
    pair.publish(on, None);
    after.extend(drain(&mut resumed));
    pair.flush(0);
    pair.flush(1);
    after.extend(drain(&mut resumed));
    record(&mut got, &after);
    // The resumed stream's last id, on the other node, asks for nothing more.
    let last = after
        .iter()
        .rev()
        .find_map(|b| b.id.clone())
        .expect("an id");
    let mut again = pair.nodes[1 - on]
        .subscribe_many(channels, None, Some(&last))
        .expect("resume again");
    let more = drain(&mut again);
    assert!(more.iter().all(|b| b.data.is_none()), "again: {more:?}");
    for channel in channels {
        let want = &pair.model[*channel];
        let have = got.remove(*channel).unwrap_or_default();
        let mut sorted = have.clone();
        sorted.sort_unstable();
        let mut expected = want.clone();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "channel {channel}: got {have:?}");
        // Values grow with time: each node's events in the order it accepted them.
        for node in 0..2 {
            let mine: Vec<u64> = have
                .iter()
                .copied()
                .filter(|v| pair.published_on[v] == node)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "channel {channel}, node {node}: {mine:?}"
            );
        }
    }
    assert!(got.is_empty(), "events of other channels: {got:?}");
}

/// Publishes on both nodes, with node 1's relay behind for some of them; returns
/// what a stream of `channels` on node 0 delivered.
fn scenario(channels: &[&str]) -> (Pair, Vec<Block>) {
    let mut pair = Pair::new(channels);
    let mut reversed = channels.to_vec();
    reversed.reverse();
    let mut stream = pair.nodes[0].subscribe_many(&reversed, None, None).unwrap();
    pair.publish(0, Some("x"));
    pair.publish(0, None);
    pair.publish(1, Some("y"));
    pair.publish(0, Some("y"));
    pair.flush(1);
    pair.publish(0, None);
    pair.publish(1, Some("z"));
    pair.publish(0, Some("x"));
    let seen = drain(&mut stream);
    (pair, seen)
}

#[test]
fn a_cursor_cut_anywhere_resumes_exactly_on_either_node() {
    let channels = ["x", "y", "z"];
    let (_, seen) = scenario(&channels);
    let events = seen.iter().filter(|b| b.data.is_some()).count();
    // Two events to every channel count three times; node 1's last event has not
    // reached node 0.
    assert_eq!(events, 10, "{seen:?}");
    assert!(seen
        .iter()
        .all(|b| b.id.as_ref().is_some_and(|id| id.starts_with('m'))));
    for cut in 0..=events {
        for on in 0..2 {
            let (mut pair, seen) = scenario(&channels);
            check_resume(&mut pair, &channels, &seen, cut, on);
        }
    }
}

/// A resume on node 1, cut inside its replay (node 1 replays its own events while
/// node 0's, which the client had, are still on their way), then resumed on node
/// 0: the ids of replayed events also cover what the client had.
#[test]
fn a_cut_inside_a_replay_resumes_exactly() {
    let channels = ["x", "y", "z"];
    let (_, seen) = scenario(&channels);
    let events = seen.iter().filter(|b| b.data.is_some()).count();
    let mut replays = 0;
    for cut in 0..=events {
        let (pair, seen) = scenario(&channels);
        let mut got = BTreeMap::new();
        let opening = seen[0].id.clone().expect("opening id");
        let id = cut_at(&mut got, &seen, cut, opening);
        let mut resumed = pair.nodes[1]
            .subscribe_many(&channels, None, Some(&id))
            .unwrap();
        let replay = drain(&mut resumed);
        let replayed = replay.iter().filter(|b| b.data.is_some()).count();
        replays += replayed;
        for cut2 in 0..=replayed {
            let (mut pair, _) = scenario(&channels);
            let mut got = got.clone();
            let id = cut_at(&mut got, &replay, cut2, id.clone());
            resume_and_check(&mut pair, &channels, got, &id, 0);
        }
    }
    assert!(replays > 0, "no case replayed anything");
}

#[test]
fn a_stream_is_one_subscriber_of_each_channel_with_one_client_id() {
    let node = broker(0xa1);
    let stream = node.subscribe_many(&["b", "a"], None, None).unwrap();
    let channels = node.channels();
    assert_eq!(channels.len(), 2);
    assert_eq!(channels["a"], vec![stream.client_id().to_owned()]);
    assert_eq!(channels["b"], channels["a"]);
    assert_eq!(stream.channels().collect::<Vec<_>>(), ["a", "b"]);
    let _taken = node.subscribe("b", Some("taken"), Resume::Live).unwrap();
    let refused = node
        .subscribe_many(&["a", "b"], Some("taken"), None)
        .unwrap_err();
    assert_eq!(refused.channel, "b");
    assert_eq!(refused.error, SubscribeError::ClientTaken);
    // Nothing of the refused stream stays.
    assert_eq!(node.channels()["a"].len(), 1);
    drop(stream);
    assert_eq!(node.channels().len(), 1);
}

/// A part of a stream cursor this cluster could not have issued (a sequence of the
/// node's own origin it never assigned) resets that channel alone, counted as a
/// refused cursor; the other channels resume, and the reset channel carries on live.
#[test]
fn a_forged_part_resets_its_channel_alone() {
    let node = broker(0xa1);
    let _keep = node.subscribe_many(&["p", "q"], None, None).unwrap();
    let mut stream = node.subscribe_many(&["p", "q"], None, None).unwrap();
    let opening = drain(&mut stream)[0].id.clone().unwrap();
    drop(stream);
    node.publish("p", &number(1), None).unwrap();
    node.publish("q", &number(2), None).unwrap();
    let set = multi_cursor::set_digest(&["p", "q"]);
    let mut cursors = multi_cursor::parse(&opening, set, 2).unwrap();
    cursors[1].frontier.advance(0xa1, u64::MAX);
    let forged = multi_cursor::encode(set, &cursors);
    let mut resumed = node
        .subscribe_many(&["q", "p"], None, Some(&forged))
        .unwrap();
    node.publish("q", &number(3), None).unwrap();
    let blocks = drain(&mut resumed);
    let resets: Vec<_> = blocks
        .iter()
        .filter(|b| b.event.as_deref() == Some("reset"))
        .map(|b| b.channel.clone().unwrap())
        .collect();
    assert_eq!(resets, ["q"]);
    let events: Vec<_> = blocks
        .iter()
        .filter(|b| b.event.is_none() && b.data.is_some())
        .map(|b| (b.channel.clone().unwrap(), b.data.clone().unwrap()))
        .collect();
    assert_eq!(
        events,
        [("p".to_owned(), 1.into()), ("q".to_owned(), 3.into())],
        "{blocks:?}"
    );
    assert_eq!(node.metrics().forged_cursors.load(Relaxed), 1);
}

proptest! {
    /// Any id, in the cursor's alphabet or not, opens the stream without a panic:
    /// with every channel resumed, or reset where its part cannot be trusted.
    #[test]
    fn any_last_event_id_opens_a_stream(text in "(m[0-9a-f]{0,9}_?[0-9._a-f]{0,40})|\\PC{0,40}") {
        let node = broker(0xa1);
        node.publish("r", &number(1), None).unwrap();
        let mut stream = node.subscribe_many(&["r", "s"], None, Some(&text)).unwrap();
        let blocks = drain(&mut stream);
        let last = blocks.last().expect("an id block");
        prop_assert!(last.id.as_ref().is_some_and(|id| id.starts_with('m')));
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish on a node to one channel (an index) or every channel.
    Publish { node: usize, channel: Option<usize> },
    /// Relay a node's pending events to the other.
    Flush(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, proptest::option::weighted(0.85, 0..4usize))
            .prop_map(|(node, channel)| Op::Publish { node, channel }),
        1 => (0..2usize).prop_map(Op::Flush),
    ]
}

const NAMES: [&str; 4] = ["c0", "c1", "c2", "c3"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random channel sets, publishes on two nodes with a relay that lags, a stream
    /// cut after any event and resumed on either node: every channel's events
    /// exactly once.
    #[test]
    fn random_streams_resume_exactly(
        set in proptest::sample::subsequence(NAMES.to_vec(), 2..=4),
        ops in proptest::collection::vec(op(), 0..40),
        cut in 0usize..200,
        on in 0..2usize,
    ) {
        let mut pair = Pair::new(&set);
        let mut stream = pair.nodes[0].subscribe_many(&set, None, None).unwrap();
        for op in ops {
            match op {
                Op::Publish { node, channel } => {
                    // A publish to a channel outside the set goes nowhere here.
                    match channel.map(|i| NAMES[i]) {
                        Some(name) if set.contains(&name) => pair.publish(node, Some(name)),
                        Some(_) => {}
                        None => pair.publish(node, None),
                    }
                }
                Op::Flush(node) => pair.flush(node),
            }
        }
        let seen = drain(&mut stream);
        let events = seen.iter().filter(|b| b.data.is_some()).count();
        check_resume(&mut pair, &set, &seen, cut % (events + 1), on);
    }
}

/// A stream of several channels is kept alive as one stream: a comment only after
/// a whole interval in which it sent nothing on any channel, one comment however
/// many of its parts the sweep finds quiet, and never a silence past the
/// interval and the sweep's period.
#[tokio::test(start_paused = true)]
async fn a_stream_of_several_channels_is_kept_alive_as_one_stream() {
    let node = broker(0xa1);
    let mut stream = node.subscribe_many(&["a", "b", "c"], None, None).unwrap();
    drain(&mut stream);
    let interval = Duration::from_secs(10);
    // The node sweeps four times an interval; times below are in quarters.
    let mut sends = vec![(0, false)];
    for quarter in 1..=48u32 {
        tokio::time::advance(interval / 4).await;
        // Events on one channel now and then, the others quiet.
        if [6, 19, 20, 33].contains(&quarter) {
            let channel = ["b", "a", "c", "b"][quarter as usize % 4];
            node.publish(channel, &number(u64::from(quarter)), None)
                .unwrap();
        }
        node.keep_alive(interval);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(next) = stream.poll_next(&mut cx) {
            match next {
                Next::Data(bytes) => sends.push((quarter, bytes.starts_with(b":"))),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let comments = sends.iter().filter(|(_, comment)| *comment).count();
    assert!(comments >= 6, "{sends:?}");
    for pair in sends.windows(2) {
        let ((before, _), (at, comment)) = (pair[0], pair[1]);
        if comment {
            assert!(
                at - before >= 4,
                "a comment {} quarters after a send: {sends:?}",
                at - before
            );
        }
        assert!(
            at - before <= 5,
            "silent for {} quarters: {sends:?}",
            at - before
        );
    }
}
