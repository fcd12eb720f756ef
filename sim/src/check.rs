//! Invariants over a trace: no duplicates, per-origin order, no silent loss,
//! channel lifecycle, membership convergence.

use std::collections::{BTreeMap, BTreeSet};

use crate::trace::{Record, What};

/// Events accepted by a node that crashes this soon afterwards may die with it
/// (the broker keeps nothing on disk): their loss is reported, not a violation. So
/// may events a node accepted while links were cut (held for peers, in memory) if
/// it crashes before the links heal.
const CRASH_WINDOW_MS: u64 = 3_000;

/// How long before leaving an event must have been accepted to count as owed.
const DRAIN_MS: u64 = 8_000;

/// Events accepted this much later than a missing one arriving means the stream
/// moved past it (relay latency is far below this).
const OVERTAKEN_MS: u64 = 5_000;

/// What a run did and what it violated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub published: usize,
    pub delivered: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub lost: usize,
    pub lost_to_crash: usize,
    pub gaps_signalled: usize,
    /// Human-readable violations (first few of each kind).
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Default)]
struct SubscriberView {
    first_open_ms: Option<u64>,
    left_ms: Option<u64>,
    seen: BTreeSet<(u32, u32)>,
    /// Latest acceptance time of any event it received.
    newest_seen_ms: u64,
    last_seq: BTreeMap<u64, u64>,
    signals: usize,
}

fn parse_data(data: &str) -> Option<(u32, u32)> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    Some((value["p"].as_u64()? as u32, value["n"].as_u64()? as u32))
}

/// Checks every invariant. `nodes` is the cluster size; `stayers` are the
/// subscribers expected to receive everything published after they first opened.
pub fn check(records: &[Record], stayers: &[String]) -> Report {
    let mut report = Report::default();
    let mut violations: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut violate =
        |kind: &'static str, text: String| violations.entry(kind).or_default().push(text);

    // Accepted events and crash times per origin.
    let mut accepted: BTreeMap<(u32, u32), (u64, u64, u64)> = BTreeMap::new();
    let mut origin_of_node: BTreeMap<usize, u64> = BTreeMap::new();
    let mut crashed_at: BTreeMap<u64, u64> = BTreeMap::new();
    // Origins stopped as planned (SIGTERM): they drain, so they may lose nothing.
    let mut stopped: BTreeSet<u64> = BTreeSet::new();
    // When links were cut (partitions, holds) and when they healed.
    let mut cuts: Vec<u64> = Vec::new();
    let mut heals: Vec<u64> = Vec::new();
    for r in records {
        match &r.what {
            What::Fault(text)
                if ["Partition", "PartitionOneWay", "Hold"]
                    .iter()
                    .any(|kind| text.starts_with(&format!("{kind}("))) =>
            {
                cuts.push(r.at_ms);
            }
            What::Fault(text) if text == "HealAll" || text.starts_with("Release(") => {
                heals.push(r.at_ms);
            }
            What::NodeStarted { node, origin } => {
                // A node started again (`Restart` of a running node bounces it)
                // ends its previous process: a crash of that origin, if no `Crash`
                // came first.
                if let Some(previous) = origin_of_node.insert(*node, *origin) {
                    if !stopped.contains(&previous) {
                        crashed_at.entry(previous).or_insert(r.at_ms);
                    }
                }
            }
            What::Fault(text) if text.starts_with("Stop(") => {
                let node: Option<usize> = text[5..text.len() - 1].parse().ok();
                if let Some(origin) = node.and_then(|n| origin_of_node.get(&n)) {
                    if !crashed_at.contains_key(origin) {
                        stopped.insert(*origin);
                    }
                }
            }
            What::Fault(text) if text.starts_with("Crash(") => {
                let node: Option<usize> = text[6..text.len() - 1].parse().ok();
                if let Some(origin) = node.and_then(|n| origin_of_node.get(&n)) {
                    crashed_at.entry(*origin).or_insert(r.at_ms);
                }
            }
            What::Published {
                p, n, origin, seq, ..
            } => {
                accepted.insert((*p, *n), (*origin, *seq, r.at_ms));
            }
            _ => {}
        }
    }
    report.published = accepted.len();

    let mut subscribers: BTreeMap<&str, SubscriberView> = BTreeMap::new();
    for r in records {
        match &r.what {
            What::Opened { .. } => {
                let s = subscribers.entry(&r.actor).or_default();
                s.first_open_ms.get_or_insert(r.at_ms);
            }
            What::Left => subscribers.entry(&r.actor).or_default().left_ms = Some(r.at_ms),
            What::Event { event, data, .. } => {
                let s = subscribers.entry(&r.actor).or_default();
                match event.as_deref() {
                    None => {
                        let Some(key) = parse_data(data) else {
                            violate("garbled", format!("{}: unreadable data {data}", r.actor));
                            continue;
                        };
                        report.delivered += 1;
                        if !s.seen.insert(key) {
                            report.duplicates += 1;
                            violate(
                                "duplicate",
                                format!("{}: {key:?} twice (at {} ms)", r.actor, r.at_ms),
                            );
                            continue;
                        }
                        if let Some((origin, seq, _)) = accepted.get(&key) {
                            let last = s.last_seq.entry(*origin).or_insert(0);
                            if *seq <= *last {
                                report.out_of_order += 1;
                                violate(
                                    "order",
                                    format!(
                                        "{}: origin {origin:x} seq {seq} after {last} (at {} ms)",
                                        r.actor, r.at_ms
                                    ),
                                );
                            }
                            *last = (*last).max(*seq);
                            s.newest_seen_ms = s.newest_seen_ms.max(accepted[&key].2);
                        }
                    }
                    Some("gap" | "reset" | "overflow") => s.signals += 1,
                    Some(other) => {
                        violate("garbled", format!("{}: unexpected event {other}", r.actor))
                    }
                }
            }
            _ => {}
        }
    }

    for name in stayers {
        let Some(s) = subscribers.get(name.as_str()) else {
            violate("loss", format!("{name}: never connected"));
            continue;
        };
        let Some(opened) = s.first_open_ms else {
            violate("loss", format!("{name}: never opened a stream"));
            continue;
        };
        // Events accepted while it was there, with time to arrive before it left.
        let until = s.left_ms.unwrap_or(u64::MAX).saturating_sub(DRAIN_MS);
        let mut missing = Vec::new();
        for (key, (origin, seq, at)) in &accepted {
            if *at < opened || *at > until || s.seen.contains(key) {
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
            let died = crashed_at.get(origin).is_some_and(|c| {
                let soon = *c >= *at && *c - *at <= CRASH_WINDOW_MS;
                // Accepted with links cut, and no heal before the crash.
                let last_cut = cuts.iter().filter(|t| **t <= *at).max();
                let last_heal = heals.iter().filter(|t| **t <= *at).max();
                let cut_then = last_cut.is_some_and(|cut| last_heal.is_none_or(|heal| cut > heal));
                let healed_before_crash = heals.iter().any(|h| h > at && h <= c);
                soon || (*c >= *at && cut_then && !healed_before_crash)
            });
            // A planned stop is not a crash: the node drained, so a signal does not
            // excuse losing what it accepted.
            let planned_stop = stopped.contains(origin) && !died;
            if died {
                report.lost_to_crash += 1;
            } else if s.signals > 0 && !planned_stop {
                report.gaps_signalled += 1;
            } else {
                missing.push(*key);
            }
        }
        if !missing.is_empty() {
            report.lost += missing.len();
            violate(
                "loss",
                format!(
                    "{name}: {} accepted events never arrived and {}, e.g. {:?}",
                    missing.len(),
                    if s.signals == 0 {
                        "no gap/reset/overflow was sent"
                    } else {
                        "their node was stopped as planned (a drain loses nothing; a signal does not excuse it)"
                    },
                    &missing[..missing.len().min(5)]
                ),
            );
        }
    }

    // Lifecycle and membership, from the end-of-run probe.
    let probes: Vec<&What> = records
        .iter()
        .filter(|r| matches!(r.what, What::Probe { .. } | What::ProbeFailed { .. }))
        .map(|r| &r.what)
        .collect();
    if probes.is_empty() {
        violate("probe", "the end-of-run probe did not run".into());
    }
    let probed: BTreeSet<String> = probes
        .iter()
        .filter_map(|w| match w {
            What::Probe { node, .. } | What::ProbeFailed { node, .. } => {
                Some(crate::cluster::node_name(*node))
            }
            _ => None,
        })
        .collect();
    for what in probes {
        match what {
            What::Probe {
                node,
                channels,
                dormant_channels,
                history_events,
                members_alive,
            } => {
                if *channels != 0 || *dormant_channels != 0 || *history_events != 0 {
                    violate(
                        "lifecycle",
                        format!("n{node} still holds the channel after every subscriber left and the replay age passed: {channels} channels, {dormant_channels} dormant, {history_events} history events"),
                    );
                }
                let alive: BTreeSet<String> = members_alive.iter().cloned().collect();
                if !probed.is_subset(&alive) {
                    violate(
                        "membership",
                        format!("n{node} sees alive {alive:?}, expected {probed:?}"),
                    );
                }
            }
            What::ProbeFailed { node, reason } => violate("probe", format!("n{node}: {reason}")),
            _ => {}
        }
    }
    for (_, list) in violations {
        let total = list.len();
        report.violations.extend(list.into_iter().take(5));
        if total > 5 {
            report
                .violations
                .push(format!("... and {} more", total - 5));
        }
    }
    report
}
