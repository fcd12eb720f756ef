//! Invariants over a trace, per (subscriber, channel): exactly once, per-origin
//! order, no silent loss (a miss only where the node signalled it, or where the
//! contract allows loss to a crash), idempotent retries, channel lifecycle and
//! membership convergence.

use std::collections::{BTreeMap, BTreeSet};

use sse_cluster::event::Cursor;

use crate::trace::{Record, What};

/// Events accepted by a node that crashes this soon afterwards may die with it
/// (the broker keeps nothing on disk): their loss is reported, not a violation. So
/// may events a node accepted while links were cut (held for peers, in memory) if
/// it crashes before the links heal (or less than this long after: peers need time
/// to find it again and pull). A drain that runs out of time counts as a
/// crash at the node's exit.
const CRASH_WINDOW_MS: u64 = 3_000;

/// Beyond the links' latency bound, how long a relayed event may still be on its
/// way to a peer (the relay's batching and ticks).
const IN_FLIGHT_SLACK_MS: u64 = 200;

/// How long before leaving an event must have been accepted to count as owed.
const DRAIN_MS: u64 = 8_000;

/// Events accepted this much later than a missing one arriving means the stream
/// moved past it (relay latency is far below this).
const OVERTAKEN_MS: u64 = 5_000;

/// A `reset` or `overflow` excuses the events its stream's cursor did not cover
/// and that were sent before the stream read it (or this moment after: still on
/// their way), since the node may have taken them before it made the signal.
const SIGNAL_SLACK_MS: u64 = 100;

/// A node that held the first copy of an event this recently still holds its
/// publisher id (well inside the replay age), so a retry on it must be a duplicate,
/// unless its process ended before the retry reached it.
const RETRY_MUST_DEDUP_MS: u64 = 2_000;

/// Wall time of the simulation's start, as cursors carry it.
const EPOCH_MS: u64 = crate::plan::EPOCH_MS;

/// What a run did and what it violated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub published: usize,
    pub delivered: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub lost: usize,
    pub lost_to_crash: usize,
    /// Misses excused by a `gap`, `reset` or `overflow` the subscriber got.
    pub gaps_signalled: usize,
    /// Losses to a crash that the subscriber was also told about (`gap`).
    pub lost_to_crash_signalled: usize,
    /// Publishes retried with the same id that were delivered once (the node
    /// answered `duplicate`, or the copies never met a subscriber twice).
    pub retries_deduplicated: usize,
    /// Events delivered on a node other than the one that accepted them.
    pub relayed: usize,
    /// Events a resume replayed from the history.
    pub replayed: usize,
    /// Streams resumed with a `Last-Event-ID` on another node than before that then
    /// got events.
    pub resumed_elsewhere: usize,
    /// Events a stream got again after a `reset` (the node could not trust its
    /// cursor, so it could not know what the subscriber had): not violations.
    pub redelivered_after_reset: usize,
    /// Events a subscriber never got because it left while still reading the
    /// tail of a stream whose node had gone (stopped or crashed) without them: the
    /// resume that would have fetched them elsewhere never happened.
    pub stranded: usize,
    /// Signals received, by name.
    pub signals: BTreeMap<String, usize>,
    /// Violations by kind (all of them, counted).
    pub violation_kinds: BTreeMap<&'static str, usize>,
    /// Human-readable violations (first few of each kind).
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// One delivered message: `(p, n, attempt)`.
type Copy = (u32, u32, u32);

/// A signal one stream got.
struct Signal {
    at_ms: u64,
    name: String,
    /// For a `gap`: the origin and the sequence it covers up to.
    gap: Option<(u64, u64)>,
    /// For an `overflow`: the stream's cursor then (what it had). A `reset` has
    /// none: its id is the node's frontier, and the client is to reload the state
    /// of everything before it, events it never got included (seed 2778: a resume
    /// on a node whose history of them had expired).
    had: Option<sse_cluster::event::Frontier>,
}

#[derive(Default)]
struct StreamView {
    first_open_ms: Option<u64>,
    left_ms: Option<u64>,
    /// The connection it left on, if that connection's node went down while it was
    /// open (the subscriber was still reading what the node had sent): the node and
    /// when it went down.
    stranded: Option<(usize, u64)>,
    /// Messages seen: `(p, n)` → attempts.
    seen: BTreeMap<(u32, u32), BTreeSet<u32>>,
    /// Latest acceptance time of any event it received.
    newest_seen_ms: u64,
    last_seq: BTreeMap<u64, u64>,
    signals: Vec<Signal>,
    /// When each message was first received.
    first_seen: BTreeMap<Copy, u64>,
    /// The connection in progress: node, whether it resumed, when it opened.
    connection: Option<(usize, bool, u64)>,
    /// The connection that ended last, until another opens: a stream whose node
    /// went down may only notice when its read times out, too late to resume
    /// before it leaves (seed 816), and is stranded as much as one still open.
    ended: Option<(usize, bool, u64)>,
    resuming: bool,
    last_node: Option<usize>,
    counted_resume: bool,
}

fn parse_data(data: &str) -> Option<Copy> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    Some((
        value["p"].as_u64()? as u32,
        value["n"].as_u64()? as u32,
        value["a"].as_u64().unwrap_or(0) as u32,
    ))
}

fn parse_gap(data: &str) -> Option<(u64, u64)> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let origin = u64::from_str_radix(value["origin"].as_str()?, 16).ok()?;
    Some((origin, value["upto"].as_u64()?))
}

/// The node index inside a `Fault` record such as `Crash(2)`.
fn fault_node(text: &str, kind: &str) -> Option<usize> {
    text.strip_prefix(kind)?
        .strip_prefix('(')?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// The duration in a fault's text, as `Debug` prints it: `Latency(1.15s)`,
/// `Latency(827ms)`.
fn fault_duration_ms(text: &str, kind: &str) -> Option<u64> {
    let inner = text
        .strip_prefix(kind)?
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let (number, scale) = if let Some(ms) = inner.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(us) = inner.strip_suffix("µs") {
        (us, 0.001)
    } else if let Some(ns) = inner.strip_suffix("ns") {
        (ns, 0.000_001)
    } else {
        (inner.strip_suffix('s')?, 1000.0)
    };
    let ms = number.parse::<f64>().ok()? * scale;
    Some(ms.ceil() as u64)
}

/// A publish a node answered as new.
struct Accepted {
    origin: u64,
    seq: u64,
    /// When the answer came (the event was accepted just before).
    at: u64,
    node: usize,
    channel: String,
    attempt: u32,
}

/// What the schedule and the publishers did: the facts the subscribers are judged by.
#[derive(Default)]
struct World {
    /// Answered publishes, by `(p, n)`.
    accepted: BTreeMap<(u32, u32), Accepted>,
    /// Every attempt: `(p, n, attempt)` → (node, send time).
    attempts: BTreeMap<Copy, (usize, u64)>,
    /// Node starts (first start and restarts), by node.
    starts: BTreeMap<usize, Vec<u64>>,
    crashed_at: BTreeMap<u64, u64>,
    /// When each node went down (a stop, a crash, or a restart of a running node).
    down: BTreeMap<usize, Vec<u64>>,
    stopped: BTreeSet<u64>,
    /// Origins stopped as planned whose drain ran out of time (see
    /// [`What::NodeExited`]).
    drain_timed_out: BTreeSet<u64>,
    /// When each origin whose process ended without a full drain (a crash, a
    /// restart, or a drain that ran out of time) ended.
    ended_undrained: BTreeMap<u64, u64>,
    /// When each origin's process started, and when one stopped as planned exited.
    started_at: BTreeMap<u64, u64>,
    exited_at: BTreeMap<u64, u64>,
    /// Link faults over time: a partition (or one-way cut) stands until `HealAll`;
    /// a held link until its `Release` or `HealAll`.
    partitions: Vec<u64>,
    partition_heals: Vec<u64>,
    /// The links' latency bound over time: (since, ms), from `Latency` faults.
    latencies: Vec<(u64, u64)>,
    holds: Vec<u64>,
    hold_heals: Vec<u64>,
    dedup_answers: usize,
}

fn world(records: &[Record]) -> World {
    let mut w = World::default();
    let mut origin_of_node: BTreeMap<usize, u64> = BTreeMap::new();
    for r in records {
        match &r.what {
            What::Fault(text)
                if text.starts_with("Partition(") || text.starts_with("PartitionOneWay(") =>
            {
                w.partitions.push(r.at_ms);
            }
            What::Fault(text) if text.starts_with("Latency(") => {
                if let Some(ms) = fault_duration_ms(text, "Latency") {
                    w.latencies.push((r.at_ms, ms));
                }
            }
            What::Fault(text) if text.starts_with("Hold(") => w.holds.push(r.at_ms),
            What::Fault(text) if text.starts_with("Release(") => w.hold_heals.push(r.at_ms),
            What::Fault(text) if text == "HealAll" => {
                w.partition_heals.push(r.at_ms);
                w.hold_heals.push(r.at_ms);
            }
            What::NodeStarted { node, origin } => {
                w.starts.entry(*node).or_default().push(r.at_ms);
                w.started_at.insert(*origin, r.at_ms);
                // A node started again (`Restart` of a running node bounces it)
                // ends its previous process: a crash of that origin, if no `Crash`
                // came first.
                if let Some(previous) = origin_of_node.insert(*node, *origin) {
                    w.down.entry(*node).or_default().push(r.at_ms);
                    if !w.stopped.contains(&previous) {
                        w.crashed_at.entry(previous).or_insert(r.at_ms);
                    }
                }
            }
            What::NodeExited {
                node,
                drain_timed_out,
            } => {
                if let Some(origin) = origin_of_node.get(node) {
                    w.exited_at.insert(*origin, r.at_ms);
                    if *drain_timed_out {
                        w.drain_timed_out.insert(*origin);
                        w.ended_undrained.entry(*origin).or_insert(r.at_ms);
                    }
                }
            }
            What::Fault(text) if text.starts_with("Stop(") => {
                if let Some(node) = fault_node(text, "Stop") {
                    w.down.entry(node).or_default().push(r.at_ms);
                }
                if let Some(origin) = fault_node(text, "Stop").and_then(|n| origin_of_node.get(&n))
                {
                    if !w.crashed_at.contains_key(origin) {
                        w.stopped.insert(*origin);
                    }
                }
            }
            What::Fault(text) if text.starts_with("Crash(") => {
                if let Some(node) = fault_node(text, "Crash") {
                    w.down.entry(node).or_default().push(r.at_ms);
                }
                if let Some(origin) = fault_node(text, "Crash").and_then(|n| origin_of_node.get(&n))
                {
                    w.crashed_at.entry(*origin).or_insert(r.at_ms);
                }
            }
            What::Published {
                p,
                n,
                attempt,
                channel,
                node,
                sent_ms,
                origin,
                seq,
                duplicate,
            } => {
                w.attempts.insert((*p, *n, *attempt), (*node, *sent_ms));
                if *duplicate {
                    w.dedup_answers += 1;
                } else {
                    let accepted = Accepted {
                        origin: *origin,
                        seq: *seq,
                        at: r.at_ms,
                        node: *node,
                        channel: channel.clone(),
                        attempt: *attempt,
                    };
                    w.accepted.insert((*p, *n), accepted);
                }
            }
            What::PublishFailed {
                p,
                n,
                attempt,
                node,
                sent_ms,
                ..
            } => {
                w.attempts.insert((*p, *n, *attempt), (*node, *sent_ms));
            }
            _ => {}
        }
    }
    for (origin, at) in &w.crashed_at {
        let end = w.ended_undrained.entry(*origin).or_insert(*at);
        *end = (*end).min(*at);
    }
    // A drain hands events to the peers the node knows. One whose whole process
    // lived behind a partition (seed 4930: restarted inside it, drained to the one
    // peer on its side, which then restarted too) cannot know the nodes across it,
    // and no node relays another's events: across the cut, it ended like a crash.
    let behind_a_cut: Vec<(u64, u64)> = w
        .exited_at
        .iter()
        .filter(|(origin, _)| {
            w.stopped.contains(*origin) && !w.ended_undrained.contains_key(*origin)
        })
        .filter(|(origin, exit)| {
            w.started_at.get(*origin).is_some_and(|start| {
                w.cut_standing(&w.partitions, &w.partition_heals, *start, **exit)
            })
        })
        .map(|(origin, exit)| (*origin, *exit))
        .collect();
    for (origin, exit) in behind_a_cut {
        w.ended_undrained.insert(origin, exit);
    }
    w
}

impl World {
    /// Whether an event `origin` accepted at `at` may have died with it.
    /// A drain that ran out of time is a departure like a crash (see
    /// [`What::NodeExited`]), so it counts here as one, at the node's exit.
    fn died(&self, origin: u64, at: u64) -> bool {
        self.ended_undrained.get(&origin).is_some_and(|c| {
            // `at` is when the publisher got the answer. One that arrived after the
            // crash (on a slow link) was sent before it: the node accepted the event
            // by then.
            let at = at.min(*c);
            let soon = *c >= at && *c - at <= CRASH_WINDOW_MS;
            // Accepted with links cut, and that cut not healed before the crash (a
            // `Release` ends a hold, not a partition). A heal less than the crash
            // window before the crash leaves no time for peers to find the node
            // again and pull (seed 9853: a restart behind a partition, healed 324
            // ms before its drain ran out; no peer ever saw that generation).
            //
            // A cut that came while the event was still on its way to the peers
            // counts as one it was accepted under (seed 1907: a partition 60 ms
            // after the answer, with links slow up to 1.15 s).
            let in_flight = at + self.latency_at(at) + IN_FLIGHT_SLACK_MS;
            let cut_until_crash = [at, in_flight].into_iter().any(|from| {
                self.cut_standing(&self.partitions, &self.partition_heals, from, *c)
                    || self.cut_standing(&self.holds, &self.hold_heals, from, *c)
            });
            soon || (*c >= at && cut_until_crash)
        })
    }

    /// The bound on one message's latency at `at` (0 before any `Latency` fault:
    /// the harness's own links are fast).
    fn latency_at(&self, at: u64) -> u64 {
        self.latencies
            .iter()
            .filter(|(since, _)| *since <= at)
            .max_by_key(|(since, _)| *since)
            .map_or(0, |(_, ms)| *ms)
    }

    /// Whether a cut (of `cuts`, healed by `heals`) stood at `from` and was not
    /// healed until `until`, or less than the crash window before it: too late
    /// for peers to find each other again.
    fn cut_standing(&self, cuts: &[u64], heals: &[u64], from: u64, until: u64) -> bool {
        let last_cut = cuts.iter().filter(|t| **t <= from).max();
        let last_heal = heals.iter().filter(|t| **t <= from).max();
        let cut_then = last_cut.is_some_and(|cut| last_heal.is_none_or(|heal| cut > heal));
        cut_then
            && !heals
                .iter()
                .any(|h| *h > from && h + CRASH_WINDOW_MS <= until)
    }

    /// The highest sequence `origin` is known to have accepted.
    fn newest_seq(&self, origin: u64) -> u64 {
        self.accepted
            .values()
            .filter(|acc| acc.origin == origin)
            .map(|acc| acc.seq)
            .max()
            .unwrap_or(0)
    }

    /// Whether `node`'s process ended or began between `from` and `to` (a crash, a
    /// planned stop, a restart, a start): a process that began then holds none of
    /// what the node held at `from`.
    fn went_down_between(&self, node: usize, from: u64, to: u64) -> bool {
        let within = |times: Option<&Vec<u64>>| {
            times.is_some_and(|times| times.iter().any(|t| *t >= from && *t <= to))
        };
        within(self.down.get(&node)) || within(self.starts.get(&node))
    }
}

/// Checks every invariant. `stayers` are the subscribers expected to receive
/// everything published to their channels while they were there.
pub fn check(records: &[Record], stayers: &[String]) -> Report {
    let mut report = Report::default();
    let mut violations: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut violate =
        |kind: &'static str, text: String| violations.entry(kind).or_default().push(text);
    let w = world(records);
    report.published = w.accepted.len();
    report.retries_deduplicated = w.dedup_answers;

    // Where each copy was in a node's log: `(node, its id's time, when a stream
    // there read it)`. The node held it at neither exactly: an id's time is how far
    // the node was caught up on every origin, at or before the copy's arrival; the
    // read comes at or after it.
    let mut held_by: BTreeMap<Copy, Vec<(usize, u64, u64)>> = BTreeMap::new();
    let mut streams: BTreeMap<&str, StreamView> = BTreeMap::new();
    for r in records {
        match &r.what {
            What::Connecting { last_event_id, .. } => {
                let s = streams.entry(&r.actor).or_default();
                s.resuming = last_event_id.is_some();
            }
            What::Opened { node } => {
                let s = streams.entry(&r.actor).or_default();
                s.first_open_ms.get_or_insert(r.at_ms);
                let elsewhere = s.resuming && s.last_node.is_some_and(|last| last != *node);
                s.counted_resume = !elsewhere;
                s.connection = Some((*node, s.resuming, r.at_ms));
                s.ended = None;
                s.last_node = Some(*node);
            }
            What::Disconnected { .. } => {
                let s = streams.entry(&r.actor).or_default();
                s.ended = s.connection.take();
            }
            What::Left => {
                let s = streams.entry(&r.actor).or_default();
                s.left_ms = Some(r.at_ms);
                s.stranded = s.connection.or(s.ended).and_then(|(node, _, opened)| {
                    let down = w.down.get(&node)?;
                    let t = down.iter().find(|t| **t > opened && **t < r.at_ms)?;
                    Some((node, *t))
                });
            }
            What::Event { id, event, data } => {
                let s = streams.entry(&r.actor).or_default();
                match event.as_deref() {
                    None => {
                        let Some((p, n, a)) = parse_data(data) else {
                            violate("garbled", format!("{}: unreadable data {data}", r.actor));
                            continue;
                        };
                        report.delivered += 1;
                        let (node, resumed, opened) =
                            s.connection.unwrap_or((usize::MAX, false, 0));
                        if let Some(time) = id
                            .as_deref()
                            .and_then(|id| Cursor::parse(id).ok())
                            .map(|c| c.time_ms.saturating_sub(EPOCH_MS))
                        {
                            held_by
                                .entry((p, n, a))
                                .or_default()
                                .push((node, time, r.at_ms));
                        }
                        if !s.seen.entry((p, n)).or_default().insert(a) {
                            let first = s.first_seen.get(&(p, n, a)).copied().unwrap_or(0);
                            let reset_since = s
                                .signals
                                .iter()
                                .any(|signal| signal.name == "reset" && signal.at_ms >= first);
                            if reset_since {
                                report.redelivered_after_reset += 1;
                                continue;
                            }
                            report.duplicates += 1;
                            violate(
                                "duplicate",
                                format!("{}: {:?} twice (at {} ms)", r.actor, (p, n, a), r.at_ms),
                            );
                            continue;
                        }
                        s.first_seen.insert((p, n, a), r.at_ms);
                        if !s.counted_resume {
                            s.counted_resume = true;
                            report.resumed_elsewhere += 1;
                        }
                        // Order is checked for the answered copy (the one whose
                        // place in its origin is known); a retry's other copy is
                        // judged with the retries below.
                        let Some(acc) = w.accepted.get(&(p, n)).filter(|acc| acc.attempt == a)
                        else {
                            continue;
                        };
                        if acc.node != node {
                            report.relayed += 1;
                        }
                        if resumed && acc.at + 50 < opened {
                            report.replayed += 1;
                        }
                        let last = s.last_seq.entry(acc.origin).or_insert(0);
                        if acc.seq <= *last {
                            report.out_of_order += 1;
                            violate(
                                "order",
                                format!(
                                    "{}: origin {:x} seq {} after {last} (at {} ms)",
                                    r.actor, acc.origin, acc.seq, r.at_ms
                                ),
                            );
                        }
                        *last = (*last).max(acc.seq);
                        s.newest_seen_ms = s.newest_seen_ms.max(acc.at);
                    }
                    Some(name @ ("gap" | "reset" | "overflow")) => {
                        if name == "reset" {
                            // The stream starts over: order is judged from here.
                            s.last_seq.clear();
                        }
                        *report.signals.entry(name.to_owned()).or_default() += 1;
                        let had = id
                            .as_deref()
                            .and_then(|id| Cursor::parse(id).ok())
                            .map(|cursor| cursor.frontier);
                        s.signals.push(Signal {
                            at_ms: r.at_ms,
                            name: name.to_owned(),
                            gap: (name == "gap").then(|| parse_gap(data)).flatten(),
                            had: (name == "overflow").then_some(had).flatten(),
                        });
                    }
                    Some(other) => {
                        violate("garbled", format!("{}: unexpected event {other}", r.actor))
                    }
                }
            }
            _ => {}
        }
    }

    // Retried publishes: two copies of one (p, n) at one stream are allowed only when
    // the node that took the retry could not have had the first copy.
    //
    // The node must still be the process that held the first copy when the retry
    // reached it, and that moment is later than the send: the request crosses a
    // slow link (the plans' latency goes past a second) and may still arrive after
    // the publisher gave up on it (its one-second timeout) and retried elsewhere. A
    // node that went down meanwhile (crashed, stopped, restarted) comes back with
    // no history and so no publisher ids, and takes the retry as new: the contract
    // allows it (a node keeps nothing across a restart; a retry is deduplicated
    // only where the first copy is), as seeds 8637, 8886 and 9272 of the random
    // search showed (the retry's copy carries the restarted node's new origin).
    // When it arrived is not in the trace, but it was accepted no later than the
    // answer that said so (if any) and no later than a stream read its copy on
    // any node, or this stream got it: a break of the node's process
    // between the first copy and that bound excuses the second copy.
    let taken_by = |p: u32, n: u32, attempt: u32, got_ms: u64| -> u64 {
        let answered = w
            .accepted
            .get(&(p, n))
            .filter(|acc| acc.attempt == attempt)
            .map(|acc| acc.at);
        let held = held_by
            .get(&(p, n, attempt))
            .and_then(|held| held.iter().map(|(_, _, read)| *read).min());
        answered.into_iter().chain(held).fold(got_ms, u64::min)
    };
    for (actor, s) in &streams {
        for ((p, n), attempts) in &s.seen {
            if attempts.len() < 2 {
                continue;
            }
            let proof = attempts.iter().find_map(|later| {
                let (node, sent) = *w.attempts.get(&(*p, *n, *later))?;
                let got = s
                    .first_seen
                    .get(&(*p, *n, *later))
                    .copied()
                    .unwrap_or(u64::MAX);
                let taken = taken_by(*p, *n, *later, got);
                attempts.iter().filter(|a| *a != later).find_map(|first| {
                    held_by
                        .get(&(*p, *n, *first))?
                        .iter()
                        .find(|(at, time, read)| {
                            // Held before the retry was sent, and recently.
                            *at == node
                                && *read < sent
                                && sent - *time < RETRY_MUST_DEDUP_MS
                                && !w.went_down_between(node, *time, taken.max(sent))
                        })?;
                    Some((*first, *later, node))
                })
            });
            if let Some((first, later, node)) = proof {
                report.duplicates += 1;
                violate(
                    "retry_duplicate",
                    format!(
                        "{actor}: ({p}, {n}) delivered as attempts {first} and {later}; n{node} had attempt {first} when attempt {later} reached it with the same id"
                    ),
                );
            }
        }
    }

    for (actor, s) in &streams {
        let (name, channel) = actor.split_once('@').unwrap_or((actor, ""));
        if !stayers.iter().any(|stayer| stayer == name) {
            continue;
        }
        let Some(opened) = s.first_open_ms else {
            violate("never_opened", format!("{actor}: never opened a stream"));
            continue;
        };
        // Events accepted while it was there, with time to arrive before it left.
        let until = s.left_ms.unwrap_or(u64::MAX).saturating_sub(DRAIN_MS);
        let mut missing = Vec::new();
        for (key, acc) in &w.accepted {
            let (origin, seq, at) = (&acc.origin, &acc.seq, &acc.at);
            if acc.channel != channel || *at < opened || *at > until || s.seen.contains_key(key) {
                continue;
            }
            // Owed only if the stream got past it: a later event of the same origin
            // arrived (a hole), or events accepted well after it did. A reader that
            // is merely behind is not losing anything.
            let hole = s.last_seq.get(origin).is_some_and(|last| last > seq);
            let overtaken = s.newest_seen_ms >= at + OVERTAKEN_MS;
            if !hole && !overtaken {
                continue;
            }
            // A `gap` says events of that origin were lost on their way. Of a node
            // stopped as planned it excuses only what a drain cannot keep: events
            // its outbox had evicted before the stop (a partition outlasted the
            // bound: the node's own gap, which stops short of its newest event,
            // unlike the one peers send for what a departed node never sent
            // them), or anything once its drain ran out of time (it left like a
            // crashed node, and peers say `gap`). A `reset` or `overflow` says
            // the stream itself could not be kept whole.
            //
            // A peer names in its `gap` what the origin announced in gossip. Once
            // the origin has ended without a full drain, what it accepted after its
            // last announcement that reached the peer died with it, and no peer can
            // name it: a `gap` of that origin sent after its end covers all of it.
            let gaps: Vec<u64> = s
                .signals
                .iter()
                .filter_map(|signal| signal.gap)
                .filter(|(gap_origin, upto)| gap_origin == origin && upto >= seq)
                .map(|(_, upto)| upto)
                .collect();
            let ended = w.ended_undrained.get(origin);
            let gap_after_end = s.signals.iter().any(|signal| {
                signal
                    .gap
                    .is_some_and(|(gap_origin, _)| gap_origin == *origin)
                    && ended.is_some_and(|end| signal.at_ms >= *end)
            });
            let gap = !gaps.is_empty() || gap_after_end;
            let evicted = gaps.iter().any(|upto| *upto < w.newest_seq(*origin));
            // Its request may have been taken before the node made the signal if it
            // was sent before the stream read the signal: the answer can come much
            // later over a slow link (seed 671), so the send time is the bound.
            let sent = w
                .attempts
                .get(&(key.0, key.1, acc.attempt))
                .map_or(*at, |(_, sent)| *sent);
            let reset = s.signals.iter().any(|signal| {
                signal.name != "gap"
                    && sent.min(*at) <= signal.at_ms + SIGNAL_SLACK_MS
                    && signal
                        .had
                        .as_ref()
                        .is_none_or(|had| had.get(*origin) < *seq)
            });
            let died = w.died(*origin, *at);
            let planned_stop = w.stopped.contains(origin)
                && !died
                && !w.drain_timed_out.contains(origin)
                && !evicted;
            // Left while reading the tail of a stream whose node went down before
            // it had this event (it did not accept it, and no stream on it saw it).
            let stranded = s.stranded.is_some_and(|(node, down)| {
                let accepted_there = acc.node == node && acc.at < down;
                let seen_there = held_by
                    .get(&(key.0, key.1, acc.attempt))
                    .is_some_and(|held| held.iter().any(|(n, _, read)| *n == node && *read < down));
                !accepted_there && !seen_there
            });
            if died {
                report.lost_to_crash += 1;
                if gap || reset {
                    report.lost_to_crash_signalled += 1;
                }
            } else if reset || (gap && !planned_stop) {
                report.gaps_signalled += 1;
            } else if stranded {
                report.stranded += 1;
            } else {
                missing.push(*key);
            }
        }
        if !missing.is_empty() {
            report.lost += missing.len();
            violate(
                "loss",
                format!(
                    "{actor}: {} accepted events never arrived and {}, e.g. {:?}",
                    missing.len(),
                    if s.signals.is_empty() {
                        "no gap/reset/overflow was sent"
                    } else {
                        "no signal covers them (or their node was stopped as planned: a drain loses nothing)"
                    },
                    &missing[..missing.len().min(5)]
                ),
            );
        }
    }

    crate::probe_check::check_probes(records, &mut violate);
    for (kind, list) in violations {
        let total = list.len();
        report.violation_kinds.insert(kind, total);
        report.violations.extend(list.into_iter().take(5));
        if total > 5 {
            report
                .violations
                .push(format!("... and {} more", total - 5));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_cluster::event::Frontier;

    fn record(at_ms: u64, actor: &str, what: What) -> Record {
        Record {
            at_ms,
            actor: actor.into(),
            what,
        }
    }

    /// Attempt `a` of publish (0, 1) as `actor` reads it at `at_ms`, with an id whose
    /// time is `id_ms`.
    fn copy(at_ms: u64, actor: &str, a: u32, id_ms: u64) -> Record {
        let cursor = Cursor {
            time_ms: EPOCH_MS + id_ms,
            frontier: Frontier::default(),
        };
        let what = What::Event {
            id: Some(cursor.encode()),
            event: None,
            data: format!(r#"{{"p":0,"n":1,"a":{a}}}"#),
        };
        record(at_ms, actor, what)
    }

    /// Publish (0, 1): attempt 0 taken by node 0 (its answer lost) and read on node
    /// 1 at 1.5 s by `s`; attempt 1, sent to node 1 at 2.1 s, answered there as new
    /// at 2.4 s; `t`, on node 0, reads both. `restart_ms`: when node 1 restarts.
    fn retried(restart_ms: Option<u64>) -> Vec<Record> {
        let mut records = vec![
            record(
                0,
                "n0",
                What::NodeStarted {
                    node: 0,
                    origin: 10,
                },
            ),
            record(
                0,
                "n1",
                What::NodeStarted {
                    node: 1,
                    origin: 11,
                },
            ),
            record(100, "s@c", What::Opened { node: 1 }),
            record(100, "t@c", What::Opened { node: 0 }),
            copy(1_000, "t@c", 0, 1_000),
            copy(1_500, "s@c", 0, 1_500),
            record(
                2_000,
                "p0",
                What::PublishFailed {
                    p: 0,
                    n: 1,
                    attempt: 0,
                    node: 0,
                    sent_ms: 1_000,
                    reason: "request timed out".into(),
                },
            ),
        ];
        if let Some(at) = restart_ms {
            records.push(record(
                at,
                "n1",
                What::NodeStarted {
                    node: 1,
                    origin: 12,
                },
            ));
            records.push(record(at, "schedule", What::Fault("Restart(1)".into())));
        }
        records.push(record(
            2_400,
            "p0",
            What::Published {
                p: 0,
                n: 1,
                attempt: 1,
                channel: "c".into(),
                node: 1,
                sent_ms: 2_100,
                origin: if restart_ms.is_some_and(|at| at < 2_400) {
                    12
                } else {
                    11
                },
                seq: 1,
                duplicate: false,
            },
        ));
        records.push(copy(2_500, "t@c", 1, 2_450));
        records.sort_by_key(|r| r.at_ms);
        records
    }

    fn retry_duplicates(records: &[Record]) -> usize {
        let report = check(records, &[]);
        report
            .violation_kinds
            .get("retry_duplicate")
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn a_retry_on_a_node_that_held_the_first_copy_must_be_a_duplicate() {
        assert_eq!(retry_duplicates(&retried(None)), 1);
    }

    #[test]
    fn a_retry_that_reached_its_node_after_a_restart_may_be_new() {
        // Restarted after the retry was sent, before it was answered: the request
        // was still on its way, and the new process holds no publisher ids.
        assert_eq!(retry_duplicates(&retried(Some(2_200))), 0);
        // Restarted before it was sent, as before.
        assert_eq!(retry_duplicates(&retried(Some(1_800))), 0);
    }

    #[test]
    fn a_restart_after_the_retry_was_taken_excuses_nothing() {
        assert_eq!(retry_duplicates(&retried(Some(2_600))), 1);
    }

    /// An id's time is how far its node was caught up, not when the copy arrived:
    /// node 1 may have got attempt 0 only after the retry reached it, though the id
    /// says 1.5 s. Only when a stream there read it bounds when it held it.
    #[test]
    fn an_ids_time_is_not_when_its_node_held_the_copy() {
        let mut records: Vec<Record> = retried(None)
            .into_iter()
            .filter(|r| r.actor != "s@c" || matches!(r.what, What::Opened { .. }))
            .collect();
        records.push(copy(2_300, "s@c", 0, 1_500));
        records.sort_by_key(|r| r.at_ms);
        assert_eq!(retry_duplicates(&records), 0);
        // Read before the retry was sent: node 1 had it.
        records.retain(|r| r.actor != "s@c" || matches!(r.what, What::Opened { .. }));
        records.push(copy(2_000, "s@c", 0, 1_500));
        records.sort_by_key(|r| r.at_ms);
        assert_eq!(retry_duplicates(&records), 1);
    }

    fn started(at_ms: u64, node: usize, origin: u64) -> Record {
        record(
            at_ms,
            &format!("n{node}"),
            What::NodeStarted { node, origin },
        )
    }

    /// Publish (0, `seq`) to channel `c`, sent to `node` at `sent_ms` and answered
    /// at `at_ms` as `origin`'s `seq`.
    fn published(at_ms: u64, sent_ms: u64, node: usize, origin: u64, seq: u64) -> Record {
        record(
            at_ms,
            "p0",
            What::Published {
                p: 0,
                n: seq as u32,
                attempt: 0,
                channel: "c".into(),
                node,
                sent_ms,
                origin,
                seq,
                duplicate: false,
            },
        )
    }

    /// `s@c` reads (0, `seq`), the event after the one the tests are about: so the
    /// stream is past it, and owed it.
    fn read_next(at_ms: u64, origin: u64, seq: u64) -> Vec<Record> {
        let mut frontier = Frontier::default();
        frontier.advance(origin, seq);
        let id = Cursor {
            time_ms: EPOCH_MS + at_ms,
            frontier,
        };
        vec![
            published(at_ms - 10, at_ms - 20, 1, origin, seq),
            record(
                at_ms,
                "s@c",
                What::Event {
                    id: Some(id.encode()),
                    event: None,
                    data: format!(r#"{{"p":0,"n":{seq},"a":0}}"#),
                },
            ),
        ]
    }

    fn losses(mut records: Vec<Record>) -> usize {
        records.sort_by_key(|r| r.at_ms);
        let report = check(&records, &["s".to_string()]);
        report.violation_kinds.get("loss").copied().unwrap_or(0)
    }

    /// A reset excuses an event whose request was on its way when the stream read
    /// it, though its answer came long after over a slow link (seed 671): the node
    /// may have taken it before it made the reset.
    #[test]
    fn a_reset_excuses_what_was_sent_before_it_was_read() {
        let reset = |frontier_seq: u64| {
            let mut frontier = Frontier::default();
            frontier.advance(11, frontier_seq);
            let id = Cursor {
                time_ms: EPOCH_MS + 100,
                frontier,
            };
            What::Event {
                id: Some(id.encode()),
                event: Some("reset".into()),
                data: "{}".into(),
            }
        };
        let run_with = |sent_ms: u64, reset_covers: u64| {
            losses(vec![
                started(0, 0, 10),
                started(0, 1, 11),
                record(100, "s@c", What::Opened { node: 1 }),
                record(110, "s@c", reset(reset_covers)),
                published(700, sent_ms, 1, 11, 2),
                read_next(2_000, 11, 3).remove(0),
                read_next(2_000, 11, 3).remove(1),
                record(12_000, "s@c", What::Left),
            ])
        };
        let run = |sent_ms: u64| run_with(sent_ms, 1);
        assert_eq!(run(50), 0, "sent before the reset was read");
        assert_eq!(run(300), 1, "sent after: the stream should have had it");
        // The reset's id names the event (the node had it): the client reloads
        // everything before it (seed 2778).
        assert_eq!(run_with(50, 5), 0);
    }

    /// A stream whose node crashed notices when its read times out; if it leaves
    /// before it could resume (seed 816), it is stranded as one still open is.
    #[test]
    fn a_stream_that_timed_out_on_a_crashed_node_and_left_is_stranded() {
        let run = |crash: bool| {
            let mut records = vec![
                started(0, 0, 10),
                started(0, 1, 11),
                record(100, "s@c", What::Opened { node: 1 }),
                published(1_500, 1_400, 0, 10, 2),
                read_next(2_000, 10, 3).remove(0),
                read_next(2_000, 10, 3).remove(1),
                record(
                    12_000,
                    "s@c",
                    What::Disconnected {
                        reason: "read timed out".into(),
                    },
                ),
                record(12_300, "s@c", What::Left),
            ];
            if crash {
                records.push(record(1_000, "schedule", What::Fault("Crash(1)".into())));
            }
            losses(records)
        };
        assert_eq!(run(true), 0);
        assert_eq!(run(false), 1, "its node was up: the event should have come");
    }

    /// An event a node took while cut off dies with it if it crashes before peers
    /// could pull it: also when the cut healed just before the crash, too late for
    /// peers to find the node again (seed 9853); not when it healed long before.
    #[test]
    fn a_heal_just_before_the_crash_leaves_the_cut_standing() {
        let run = |heal_ms: u64| {
            let mut records = vec![
                started(0, 0, 10),
                started(0, 1, 11),
                record(100, "s@c", What::Opened { node: 0 }),
                record(1_000, "schedule", What::Fault("Partition([1], [0])".into())),
                published(2_000, 1_990, 1, 11, 2),
                record(heal_ms, "schedule", What::Fault("HealAll".into())),
                record(9_000, "schedule", What::Fault("Crash(1)".into())),
                record(20_000, "s@c", What::Left),
            ];
            records.extend(read_next(9_500, 11, 3));
            losses(records)
        };
        assert_eq!(run(8_700), 0, "healed 300 ms before the crash");
        assert_eq!(run(4_000), 1, "healed 5 s before: peers had time to pull");
    }

    /// A node restarted behind a partition drains to the peers on its side only:
    /// across the cut, what it accepted is lost as to a crash when the cut stood
    /// through its whole life (seed 4930); not when it healed in time for the
    /// nodes across it to find it and pull.
    #[test]
    fn a_drain_behind_a_standing_partition_ends_like_a_crash_across_it() {
        let run = |heal_ms: u64| {
            let mut records = vec![
                started(0, 0, 10),
                started(0, 1, 11),
                record(100, "s@c", What::Opened { node: 0 }),
                record(1_000, "schedule", What::Fault("Partition([1], [0])".into())),
                record(1_500, "schedule", What::Fault("Restart(1)".into())),
                started(1_500, 1, 12),
                published(2_000, 1_990, 1, 12, 2),
                record(6_000, "schedule", What::Fault("Stop(1)".into())),
                record(
                    6_500,
                    "n1",
                    What::NodeExited {
                        node: 1,
                        drain_timed_out: false,
                    },
                ),
                record(heal_ms, "schedule", What::Fault("HealAll".into())),
                record(20_000, "s@c", What::Left),
            ];
            records.extend(read_next(9_500, 12, 3));
            losses(records)
        };
        assert_eq!(run(8_000), 0, "healed after it exited");
        assert_eq!(
            run(2_500),
            1,
            "healed 4 s before its stop: its drain knew the far side"
        );
    }

    /// An event still on its way to the peers when a cut came is lost with its
    /// node as one accepted under the cut (seed 1907: a partition 60 ms after the
    /// answer, links slow up to 1.15 s); not once the links were fast enough for
    /// it to arrive first.
    #[test]
    fn a_cut_while_the_event_was_in_flight_counts_as_standing() {
        let run = |latency: &str| {
            let mut records = vec![
                started(0, 0, 10),
                started(0, 1, 11),
                record(100, "s@c", What::Opened { node: 0 }),
                record(500, "schedule", What::Fault(format!("Latency({latency})"))),
                published(2_000, 1_990, 1, 11, 2),
                record(2_400, "schedule", What::Fault("Partition([1], [0])".into())),
                record(5_500, "schedule", What::Fault("Crash(1)".into())),
                record(9_000, "schedule", What::Fault("HealAll".into())),
                record(20_000, "s@c", What::Left),
            ];
            records.extend(read_next(9_500, 11, 3));
            losses(records)
        };
        assert_eq!(
            run("1.15s"),
            0,
            "it may not have reached node 0 before the cut"
        );
        assert_eq!(run("10ms"), 1, "it reached node 0 before the cut");
        assert_eq!(fault_duration_ms("Latency(827ms)", "Latency"), Some(827));
        assert_eq!(fault_duration_ms("Latency(1.298s)", "Latency"), Some(1298));
    }
}
