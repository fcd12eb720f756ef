//! What a scale run measured, from its trace, relay dials and seam samples, and
//! the table it prints as.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::time::Duration;

use super::seam::{Counts, Dial};
use super::{Setup, IDLE};
use crate::trace::{Record, What};

/// What one run measured. Times are milliseconds of simulated time.
#[derive(Debug, Clone)]
pub struct Measured {
    pub setup: Setup,
    /// From start until every node started at 0 s pulled from every other one.
    pub mesh_formed_ms: Option<u64>,
    /// From the join until the last other node dialled the newcomer's relay.
    pub join_seen_ms: Option<u64>,
    /// From the join until the newcomer applied its first relayed event.
    pub join_first_event_ms: Option<u64>,
    /// From each POST until a subscriber on every node had it, over the events
    /// every node got.
    pub reach_ms: Vec<u64>,
    /// From each POST until the subscriber on the accepting node had it: the floor
    /// of `reach_ms` (the POST and the SSE write, no relay hop).
    pub own_ms: Vec<u64>,
    /// Relay connections dialled while the measured events were delivered (a
    /// stalled or broken stream is dialled again).
    pub redials: usize,
    /// Publishes answered 200 (the others may or may not have been accepted).
    pub published: u32,
    /// Deliveries owed: published events times subscribers.
    pub owed: u64,
    /// Owed deliveries that never came, and deliveries of an event seen before.
    pub missing: u64,
    pub duplicates: u64,
    /// Seam counts from the moment every node has published once until the last
    /// delivery, and the events published in that window.
    pub during: Counts,
    pub counted_events: u32,
    /// Seam counts over the quiet window (2.5 s) before the first publish.
    pub idle: Counts,
}

impl Measured {
    pub fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.published == self.setup.events
    }

    /// The `p`-th percentile (nearest rank) of `reach_ms`.
    pub fn reach_percentile(&self, p: f64) -> Option<u64> {
        percentile(&self.reach_ms, p)
    }

    /// The `p`-th percentile (nearest rank) of `own_ms`.
    pub fn own_percentile(&self, p: f64) -> Option<u64> {
        percentile(&self.own_ms, p)
    }

    pub fn relay_bytes_per_event(&self) -> f64 {
        self.during.relay_bytes as f64 / f64::from(self.counted_events.max(1))
    }

    pub fn relay_segments_per_event(&self) -> f64 {
        self.during.relay_segments as f64 / f64::from(self.counted_events.max(1))
    }

    /// Gossip bytes each node sends per second, in the quiet window.
    pub fn gossip_bytes_per_node_s(&self) -> f64 {
        self.idle.gossip_bytes as f64 / IDLE.as_secs_f64() / self.setup.nodes as f64
    }

    /// Relay bytes (pings) per node per second, in the quiet window.
    pub fn idle_relay_bytes_per_node_s(&self) -> f64 {
        self.idle.relay_bytes as f64 / IDLE.as_secs_f64() / self.setup.nodes as f64
    }
}

fn percentile(values: &[u64], p: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Whether every measured publish was answered and every subscriber has every
/// event that was published.
pub(super) fn all_delivered(records: &[Record], setup: &Setup) -> bool {
    let (mut answered, mut published) = (0, 0);
    let mut got = BTreeSet::new();
    for r in records {
        match &r.what {
            What::Published { p: 1, .. } => {
                answered += 1;
                published += 1;
            }
            What::PublishFailed { p: 1, .. } => answered += 1,
            What::Event {
                event: None, data, ..
            } => {
                if let Some((1, n)) = key(data) {
                    got.insert((r.actor.as_str(), n));
                }
            }
            _ => {}
        }
    }
    answered == setup.events && got.len() == published as usize * setup.nodes
}

/// The first sample at or after `at_ms` (the last one if none is).
fn samples_at(samples: &[(u64, Counts)], at_ms: u64) -> (u64, Counts) {
    samples
        .iter()
        .find(|(t, _)| *t >= at_ms)
        .or(samples.last())
        .copied()
        .unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// `(p, n)` of a workload event's data `{"p":P,"n":N}`.
fn key(data: &str) -> Option<(u32, u32)> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let p = u32::try_from(value["p"].as_u64()?).ok()?;
    let n = u32::try_from(value["n"].as_u64()?).ok()?;
    Some((p, n))
}

pub(super) fn summarise(
    setup: &Setup,
    records: &[Record],
    dials: &[Dial],
    ips: &[IpAddr],
    first_event_at: Option<Duration>,
    samples: &[(u64, Counts)],
) -> Measured {
    let n = setup.nodes;
    let joiner = n - 1;
    // First dial of each (from, to) pair.
    let mut first_dial: BTreeMap<(usize, IpAddr), u64> = BTreeMap::new();
    for dial in dials {
        first_dial
            .entry((dial.from, dial.to.ip()))
            .or_insert(dial.at_ms);
    }
    let last_dial = |pairs: &mut dyn Iterator<Item = (usize, usize)>| -> Option<u64> {
        pairs
            .map(|(from, to)| first_dial.get(&(from, ips[to])).copied())
            .try_fold(0, |latest, at| at.map(|at| latest.max(at)))
    };
    let mesh_formed_ms = last_dial(
        &mut (0..joiner).flat_map(|a| (0..joiner).filter(move |b| *b != a).map(move |b| (a, b))),
    );
    let join_at = millis(setup.join_at);
    let join_seen_ms =
        last_dial(&mut (0..joiner).map(|a| (a, joiner))).map(|at| at.saturating_sub(join_at));
    let join_first_event_ms = first_event_at.map(|at| millis(at).saturating_sub(join_at));

    // Each published event and the node that accepted it.
    let accepted_on: BTreeMap<u32, usize> = records
        .iter()
        .filter_map(|r| match r.what {
            What::Published { p: 1, n, node, .. } => Some((n, node)),
            _ => None,
        })
        .collect();
    let published: Vec<u32> = accepted_on.keys().copied().collect();
    // Per subscriber and event, the times it was delivered.
    let mut got: BTreeMap<(usize, (u32, u32)), Vec<u64>> = BTreeMap::new();
    for r in records {
        let (
            Some(sub),
            What::Event {
                event: None, data, ..
            },
        ) = (
            // A subscriber's actor is `s{i}@{channel}`.
            r.actor
                .strip_prefix('s')
                .map(|rest| rest.split('@').next().unwrap_or(rest)),
            &r.what,
        )
        else {
            continue;
        };
        if let (Ok(sub), Some(key)) = (sub.parse::<usize>(), key(data)) {
            got.entry((sub, key)).or_default().push(r.at_ms);
        }
    }
    let duplicates = got.values().map(|times| times.len() as u64 - 1).sum();
    let mut missing = 0;
    let mut reach_ms = Vec::new();
    let mut own_ms = Vec::new();
    let publish_at = millis(setup.publish_at);
    let mut last_delivery = publish_at;
    for &event in &published {
        let posted = millis(setup.publish_at + setup.interval * (event - 1));
        let mut latest = Some(posted);
        let accepting = accepted_on[&event];
        if let Some(at) = got.get(&(accepting, (1, event))).and_then(|t| t.first()) {
            own_ms.push(at - posted);
        }
        for sub in 0..n {
            match got.get(&(sub, (1, event))).and_then(|t| t.first()) {
                Some(at) => latest = latest.map(|l| l.max(*at)),
                None => {
                    missing += 1;
                    latest = None;
                }
            }
        }
        if let Some(latest) = latest {
            reach_ms.push(latest - posted);
            last_delivery = last_delivery.max(latest);
        }
    }
    // Counted from when every node has published once: before, a relay stream idle
    // for a second sends pings. From then on one event comes from each node every
    // `nodes * interval` (under the ping interval), so the window is events only.
    let (from_ms, from) = samples_at(samples, publish_at + millis(setup.interval) * n as u64);
    let counted_events = published
        .iter()
        .filter(|e| millis(setup.publish_at + setup.interval * (**e - 1)) >= from_ms)
        .count() as u32;
    let during = samples_at(samples, last_delivery).1.since(&from);
    let redials = dials
        .iter()
        .filter(|d| (publish_at..=last_delivery).contains(&d.at_ms))
        .count();
    let idle = samples_at(samples, publish_at)
        .1
        .since(&samples_at(samples, publish_at - millis(IDLE)).1);
    Measured {
        setup: setup.clone(),
        mesh_formed_ms,
        join_seen_ms,
        join_first_event_ms,
        reach_ms,
        own_ms,
        redials,
        published: published.len() as u32,
        owed: published.len() as u64 * n as u64,
        missing,
        duplicates,
        during,
        counted_events,
        idle,
    }
}

fn ms(value: Option<u64>) -> String {
    value.map_or("never".into(), |v| format!("{v} ms"))
}

/// The header of the table, with the parameters of its runs.
pub fn table_header(events: u32, interval: Duration) -> String {
    format!(
        "{events} events, one every {} ms in turn on every node; every link 1 ms (turmoil, 1 ms ticks); \
         the loss applies to node-to-node links; times in simulated ms\n\n\
         | nodes | links | mesh formed | join: seen by all | join: first relayed event | own node p50 | reach all p50 | p99 | max | relay bytes/event | relay segments/event | relay redials | idle relay B/s/node | gossip B/s/node | exactly once |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        interval.as_millis()
    )
}

/// One markdown row of the table.
pub fn table_row(m: &Measured) -> String {
    let links = if m.setup.loss > 0.0 {
        format!("1 ms, {}% loss", m.setup.loss * 100.0)
    } else {
        "1 ms".to_owned()
    };
    let once = if m.exactly_once() {
        format!("yes ({} of {})", m.owed - m.missing, m.owed)
    } else {
        format!(
            "NO: {} missing, {} twice, {} of {} published",
            m.missing, m.duplicates, m.published, m.setup.events
        )
    };
    let mut row = String::new();
    let _ = writeln!(
        row,
        "| {} | {links} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {:.0} | {:.0} | {once} |",
        m.setup.nodes,
        ms(m.mesh_formed_ms),
        ms(m.join_seen_ms),
        ms(m.join_first_event_ms),
        ms(m.own_percentile(0.5)),
        ms(m.reach_percentile(0.5)),
        ms(m.reach_percentile(0.99)),
        ms(m.reach_percentile(1.0)),
        m.relay_bytes_per_event(),
        m.relay_segments_per_event(),
        m.redials,
        m.idle_relay_bytes_per_node_s(),
        m.gossip_bytes_per_node_s(),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, actor: &str, what: What) -> Record {
        Record {
            at_ms,
            actor: actor.to_owned(),
            what,
        }
    }

    fn published(n: u32) -> What {
        What::Published {
            p: 1,
            n,
            attempt: 1,
            channel: crate::plan::CHANNEL.to_owned(),
            // In turn on two nodes.
            node: (n as usize - 1) % 2,
            sent_ms: 0,
            origin: 1,
            seq: u64::from(n),
            duplicate: false,
        }
    }

    fn event(n: u32) -> What {
        What::Event {
            id: None,
            event: None,
            data: format!(r#"{{"p":1,"n":{n}}}"#),
        }
    }

    #[test]
    fn an_event_twice_and_one_never_are_not_exactly_once() {
        let setup = Setup {
            events: 2,
            ..Setup::new(2, 0.0)
        };
        let at = setup.publish_at.as_millis() as u64;
        let records = [
            record(at + 3, "publisher", published(1)),
            record(at + 3, "s0", event(1)),
            record(at + 4, "s1", event(1)),
            record(at + 13, "publisher", published(2)),
            record(at + 14, "s0", event(2)),
            record(at + 15, "s0", event(2)),
        ];
        let ips = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let m = summarise(&setup, &records, &[], &ips, None, &[]);
        assert_eq!((m.missing, m.duplicates, m.owed), (1, 1, 4));
        assert!(!m.exactly_once());
        assert!(!all_delivered(&records, &setup));
        // Only the event every node got has a time to reach all; the accepting
        // node of event 2 is node 1, which never got it.
        assert_eq!((m.reach_ms, m.own_ms), (vec![4], vec![3]));
    }

    #[test]
    fn every_event_once_everywhere_is_exactly_once() {
        let setup = Setup {
            events: 1,
            ..Setup::new(2, 0.0)
        };
        let at = setup.publish_at.as_millis() as u64;
        let records = [
            record(at + 3, "publisher", published(1)),
            record(at + 3, "s0", event(1)),
            record(at + 5, "s1", event(1)),
        ];
        let ips = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let m = summarise(&setup, &records, &[], &ips, None, &[]);
        assert!(m.exactly_once() && all_delivered(&records, &setup));
        assert_eq!(m.reach_percentile(0.99), Some(5));
    }
}
