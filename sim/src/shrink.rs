//! Shrinking a failing plan: drop faults, subscribers and publishers, and cut
//! publishers' counts, one at a time, keeping each cut that still fails; then print
//! what is left as a named scenario to paste into `scenarios.rs`.
//!
//! A cut is named (`f3` the fourth fault, `s2` a subscriber, `p1` a publisher,
//! `p1:10` publisher 1's count cut to 10) so each trial runs in a fresh process with
//! `--without`, as every run of a sweep does (see the crate docs on determinism).

use std::fmt::Write;
use std::time::Duration;

use crate::plan::{Fault, Plan};

/// Applies the cuts in `without` (comma-separated names, see the module docs).
pub fn without(mut plan: Plan, without: &str) -> Result<Plan, String> {
    let mut drop_faults = Vec::new();
    let mut drop_subscribers = Vec::new();
    let mut drop_publishers = Vec::new();
    for cut in without.split(',').filter(|c| !c.is_empty()) {
        let (kind, rest) = cut.split_at(1);
        let bad = || format!("bad cut {cut:?}");
        match (kind, rest.split_once(':')) {
            ("f", None) => drop_faults.push(rest.parse::<usize>().map_err(|_| bad())?),
            ("s", None) => drop_subscribers.push(rest.parse::<usize>().map_err(|_| bad())?),
            ("p", None) => drop_publishers.push(rest.parse::<usize>().map_err(|_| bad())?),
            ("p", Some((index, count))) => {
                let index: usize = index.parse().map_err(|_| bad())?;
                let count: u32 = count.parse().map_err(|_| bad())?;
                let publisher = plan.publishers.get_mut(index).ok_or_else(bad)?;
                publisher.count = publisher.count.min(count);
            }
            _ => return Err(bad()),
        }
    }
    let keep = |list: &[usize], i: usize| !list.contains(&i);
    plan.faults = plan
        .faults
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(&drop_faults, *i))
        .map(|(_, f)| f)
        .collect();
    plan.subscribers = plan
        .subscribers
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(&drop_subscribers, *i))
        .map(|(_, s)| s)
        .collect();
    plan.publishers = plan
        .publishers
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(&drop_publishers, *i))
        .map(|(_, p)| p)
        .collect();
    Ok(plan)
}

/// The cuts to try on `plan`, biggest first: publishers and subscribers, then faults
/// (not the final repairs, which keep the end-of-run probe meaningful), then halved
/// publisher counts.
pub fn candidates(plan: &Plan, heal: Duration) -> Vec<String> {
    let mut cuts = Vec::new();
    cuts.extend((0..plan.publishers.len()).map(|i| format!("p{i}")));
    cuts.extend((0..plan.subscribers.len()).map(|i| format!("s{i}")));
    cuts.extend(
        plan.faults
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at < heal)
            .map(|(i, _)| format!("f{i}")),
    );
    for (i, publisher) in plan.publishers.iter().enumerate() {
        let mut count = publisher.count / 2;
        while count >= 2 {
            cuts.push(format!("p{i}:{count}"));
            count /= 2;
        }
    }
    cuts
}

fn duration(d: Duration) -> String {
    format!("Duration::from_millis({})", d.as_millis())
}

fn fault(f: &Fault) -> String {
    match f {
        Fault::Latency(d) => format!("Fault::Latency({})", duration(*d)),
        Fault::Partition(a, b) => format!("Fault::Partition(vec!{a:?}, vec!{b:?})"),
        Fault::Loss(rate) => format!("Fault::Loss({rate:?})"),
        other => format!("Fault::{other:?}"),
    }
}

/// `plan` as a function returning it, to paste into `scenarios.rs`.
pub fn as_scenario(plan: &Plan, name: &str, note: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "/// {note}");
    let _ = writeln!(out, "pub fn {name}() -> Plan {{");
    let _ = writeln!(out, "    Plan {{");
    let _ = writeln!(out, "        name: {name:?}.into(),");
    let _ = writeln!(out, "        nodes: {},", plan.nodes);
    let _ = writeln!(out, "        late_nodes: vec!{:?},", plan.late_nodes);
    let _ = writeln!(out, "        subscribers: vec![");
    for s in &plan.subscribers {
        let _ = writeln!(
            out,
            "            SubscriberSpec {{ name: {:?}.into(), channels: vec![{}], nodes: vec!{:?}, start: {}, stop: {}, read_delay: {}, hop_every: {} }},",
            s.name,
            s.channels.iter().map(|c| format!("{c:?}.into()")).collect::<Vec<_>>().join(", "),
            s.nodes,
            duration(s.start),
            duration(s.stop),
            duration(s.read_delay),
            s.hop_every.map_or("None".to_owned(), |d| format!("Some({})", duration(d))),
        );
    }
    let _ = writeln!(out, "        ],");
    let _ = writeln!(out, "        publishers: vec![");
    for p in &plan.publishers {
        let _ = writeln!(
            out,
            "            PublisherSpec {{ name: {:?}.into(), p: {}, channel: {:?}.into(), nodes: vec!{:?}, start: {}, count: {}, interval: {}, retry_with_id: {} }},",
            p.name, p.p, p.channel, p.nodes, duration(p.start), p.count, duration(p.interval), p.retry_with_id
        );
    }
    let _ = writeln!(out, "        ],");
    let _ = writeln!(out, "        faults: vec![");
    for (at, f) in &plan.faults {
        let _ = writeln!(out, "            ({}, {}),", duration(*at), fault(f));
    }
    let _ = writeln!(out, "        ],");
    let _ = writeln!(out, "        probe_at: {},", duration(plan.probe_at));
    let _ = writeln!(
        out,
        "        subscriber_buffer: {},",
        plan.subscriber_buffer
    );
    let _ = writeln!(out, "        replay_age: {},", duration(plan.replay_age));
    let _ = writeln!(
        out,
        "        relay_queue_events: {},",
        plan.relay_queue_events
    );
    let _ = writeln!(out, "        tcp_capacity: {},", plan.tcp_capacity);
    let _ = writeln!(
        out,
        "        planted: {},",
        plan.planted
            .map_or("None".to_owned(), |b| format!("Some(Bug::{b:?})"))
    );
    let _ = writeln!(
        out,
        "        drain_timeout: {},",
        duration(plan.drain_timeout)
    );
    let _ = writeln!(out, "        tick: {},", duration(plan.tick));
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    out
}
