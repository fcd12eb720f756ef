//! The random plan generator: one seed draws the whole plan, across the space of
//! workloads and faults the harness has. 3 to 7 nodes, some joining late; up to
//! three channels; publishers on random nodes at random rates, some with ids that
//! they retry on the next node after a failed or unanswered publish; subscribers
//! that come and go, on one channel or several (in two plans of five, on one
//! stream of several channels or through a pattern such as `g.*`), hop to other
//! nodes with their last id, some reading slowly enough to overflow a small
//! buffer; and overlapping
//! faults of every kind (partitions of any shape, one-way cuts, held links, loss,
//! latency, crashes, restarts, planned stops), all healed at [`HEAL`].
//!
//! It follows the timeline of the named scenarios: subscribers from 3 s, publishers
//! from 5 s to about 20 s, faults from 6 s to 19 s, the heal at 21 s, everyone gone
//! by [`LEAVE`], the probe once the replay age has passed.

use std::time::Duration;

use crate::plan::{secs, Fault, Plan, PublisherSpec, SubscriberSpec, HEAL, LEAVE, REPLAY_AGE};

/// Salt of the second generator of a seed, that draws its streams of several
/// channels and patterns (see [`several_channels_a_stream`]): drawing them leaves
/// every draw of the first as it was, so a plan without them is the one the seed
/// drew before they existed.
const STREAMS_SALT: u64 = 0x0017_0003_5eed_c0de;

/// The share of plans with streams of several channels or patterns.
const STREAMS_SHARE: f64 = 0.4;

/// splitmix64: small, and the same on every platform.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5151_0019_d1ce_0001)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// Seconds in `[a, b)`, to the millisecond.
    fn secs(&mut self, a: f64, b: f64) -> Duration {
        let ms = (a * 1000.0) as u64 + self.below(((b - a) * 1000.0) as u64);
        Duration::from_millis(ms)
    }

    fn ms(&mut self, a: u64, b: u64) -> Duration {
        Duration::from_millis(a + self.below(b - a))
    }

    /// The nodes in a random order starting anywhere: where a client goes first,
    /// and then next.
    fn order(&mut self, nodes: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..nodes).collect();
        for i in (1..all.len()).rev() {
            let j = self.index(i + 1);
            all.swap(i, j);
        }
        all
    }
}

/// The plan of `seed`.
pub fn random(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let nodes = 3 + rng.index(5);
    let channels: Vec<String> = (0..1 + rng.index(3)).map(|c| format!("c{c}")).collect();
    let mut faults = Vec::new();

    // Nodes joining late (never node 0, so someone is there from the start).
    let mut late_nodes = Vec::new();
    if rng.chance(0.35) {
        for _ in 0..1 + rng.index(2) {
            let node = 1 + rng.index(nodes - 1);
            if !late_nodes.contains(&node) {
                late_nodes.push(node);
                faults.push((rng.secs(6.0, 15.0), Fault::Join(node)));
            }
        }
    }

    let publishers = (0..2 + rng.index(4))
        .map(|k| {
            let start = rng.secs(5.0, 8.0);
            let interval = rng.ms(80, 700);
            let span = secs(20.0).saturating_sub(start);
            PublisherSpec {
                name: format!("p{k}"),
                p: k as u32,
                channel: channels[rng.index(channels.len())].clone(),
                nodes: rng.order(nodes),
                start,
                count: ((span.as_millis() / interval.as_millis()) as u32).clamp(5, 80),
                interval,
                retry_with_id: rng.chance(0.7),
            }
        })
        .collect::<Vec<_>>();

    let mut subscribers = Vec::new();
    for k in 0..3 + rng.index(6) {
        // Most stay from the start to the end (the loss check covers them); the
        // others come and go.
        let stays = k < 2 || rng.chance(0.5);
        let (start, stop) = if stays {
            (rng.secs(3.0, 4.0), LEAVE)
        } else {
            let start = rng.secs(3.0, 18.0);
            (start, start + rng.secs(1.0, 10.0))
        };
        let mut mine = channels.clone();
        if mine.len() > 1 && rng.chance(0.6) {
            let keep = 1 + rng.index(mine.len());
            for _ in keep..mine.len() {
                let drop = rng.index(mine.len());
                mine.remove(drop);
            }
        }
        subscribers.push(SubscriberSpec {
            name: format!("s{k}"),
            channels: mine,
            nodes: rng.order(nodes),
            start,
            stop,
            read_delay: if rng.chance(0.25) {
                rng.ms(300, 1500)
            } else {
                Duration::ZERO
            },
            hop_every: rng.chance(0.3).then(|| rng.secs(2.0, 8.0)),
        });
    }

    for _ in 0..2 + rng.index(8) {
        let at = rng.secs(6.0, 19.0);
        let a = rng.index(nodes);
        let b = (a + 1 + rng.index(nodes - 1)) % nodes;
        match rng.below(11) {
            0 | 1 => {
                // Any shape: each node on one side, the other, or neither.
                let (mut left, mut right) = (Vec::new(), Vec::new());
                for node in 0..nodes {
                    match rng.below(3) {
                        0 => left.push(node),
                        1 => right.push(node),
                        _ => {}
                    }
                }
                if left.is_empty() || right.is_empty() {
                    (left, right) = (vec![a], vec![b]);
                }
                faults.push((at, Fault::Partition(left, right)));
                if rng.chance(0.5) {
                    faults.push((at + rng.secs(0.5, 6.0), Fault::HealAll));
                }
            }
            2 => faults.push((at, Fault::PartitionOneWay(a, b))),
            3 => {
                faults.push((at, Fault::Hold(a, b)));
                if rng.chance(0.7) {
                    faults.push((at + rng.secs(0.2, 4.0), Fault::Release(a, b)));
                }
            }
            4 => faults.push((at, Fault::Loss(rng.below(30) as f64 / 100.0))),
            5 => faults.push((at, Fault::Latency(rng.ms(5, 1500)))),
            6 | 7 => {
                faults.push((at, Fault::Crash(a)));
                if rng.chance(0.7) {
                    faults.push((at + rng.secs(0.5, 6.0), Fault::Restart(a)));
                }
            }
            8 | 9 => {
                faults.push((at, Fault::Stop(a)));
                if rng.chance(0.7) {
                    faults.push((at + rng.secs(0.5, 6.0), Fault::Restart(a)));
                }
            }
            _ => faults.push((at, Fault::Restart(a))),
        }
    }
    // Everything healed at the end: links, and every node running again (those
    // that never joined join), so every node is probed.
    faults.push((HEAL, Fault::HealAll));
    faults.push((HEAL, Fault::Loss(0.0)));
    faults.push((HEAL, Fault::Latency(Duration::from_millis(10))));
    for node in 0..nodes {
        faults.push((HEAL, Fault::Revive(node)));
        if late_nodes.contains(&node) {
            faults.push((HEAL, Fault::Join(node)));
        }
    }
    let mut publishers = publishers;
    several_channels_a_stream(seed, channels, &mut publishers, &mut subscribers);
    // A slow reader backs up into the broker only through a short TCP window
    // (turmoil counts it in segments, and a lagging stream's writes are batched).
    let slow = subscribers.iter().any(|s| !s.read_delay.is_zero());
    Plan {
        name: "random".into(),
        nodes,
        late_nodes,
        subscribers,
        publishers,
        faults,
        probe_at: LEAVE + REPLAY_AGE * 2 + secs(2.0),
        subscriber_buffer: if rng.chance(if slow { 0.9 } else { 0.2 }) {
            4 + rng.index(12)
        } else {
            512
        },
        replay_age: REPLAY_AGE,
        relay_queue_events: if rng.chance(0.5) {
            5 + rng.index(25)
        } else {
            10_000
        },
        tcp_capacity: if slow || rng.chance(0.2) { 16 } else { 64 },
        planted: None,
        drain_timeout: Duration::from_secs(10),
        tick: crate::plan::RANDOM_TICK,
    }
}

/// In a share of plans ([`STREAMS_SHARE`], drawn from a generator of its own), some
/// subscribers follow their channels on one stream, or through a pattern. The
/// channels after `c0` move under the prefix `g.` (`g.c1`, `g.c2`) so that `g.*`
/// matches them (a plan of one channel gets a second one, which some publishers
/// move to); then each subscriber (`s0` always) may follow its channels on one
/// stream (`c0,g.c1`), `g.*` and its other channels on one stream (`c0,g.*`), or
/// `g.*` on a stream of its own beside the others (`c0` and `g.*`).
fn several_channels_a_stream(
    seed: u64,
    mut channels: Vec<String>,
    publishers: &mut [PublisherSpec],
    subscribers: &mut [SubscriberSpec],
) {
    let mut rng = Rng::new(seed ^ STREAMS_SALT);
    if !rng.chance(STREAMS_SHARE) {
        return;
    }
    if channels.len() == 1 {
        channels.push("c1".to_owned());
        for publisher in publishers.iter_mut() {
            if rng.chance(0.5) {
                publisher.channel = "c1".to_owned();
            }
        }
    }
    let grouped = |channel: &str| match channel {
        "c0" => channel.to_owned(),
        _ => format!("g.{channel}"),
    };
    for publisher in publishers.iter_mut() {
        publisher.channel = grouped(&publisher.channel);
    }
    for (k, subscriber) in subscribers.iter_mut().enumerate() {
        let mine: Vec<String> = subscriber.channels.iter().map(|c| grouped(c)).collect();
        let plain: Vec<String> = mine
            .iter()
            .filter(|c| !c.starts_with("g."))
            .cloned()
            .collect();
        subscriber.channels = match rng.below(if k == 0 { 3 } else { 5 }) {
            0 if mine.len() > 1 => vec![mine.join(",")],
            0 | 1 => {
                let mut one = plain;
                one.push("g.*".to_owned());
                vec![one.join(",")]
            }
            2 => {
                let mut apart = plain;
                apart.push("g.*".to_owned());
                apart
            }
            _ => mine,
        };
    }
}
