//! Clusters of 3 to 33 nodes, measured (issue 18 item 4).
//!
//! One run is one cluster of `nodes` under turmoil, every link 1 ms, optionally with
//! loss on the links between nodes. Its timeline, in simulated time:
//!
//! - 0 s: all nodes but the last start; each one's subscriber connects from 1 s.
//! - `join_at`: the last node starts, while node 0 accepts a publish every 100 ms.
//!   Its subscriber connects a second later.
//!   Measured: when every other node has dialled its relay (it saw the newcomer alive
//!   in gossip and pulls from it), and when the newcomer applied its first relayed
//!   event.
//! - `publish_at`: `events` publishes, one every `interval`, in turn on every node.
//!   Measured: the time from each POST until a subscriber on every node has the
//!   event, the relay bytes and segments per event, and exactly-once delivery.
//!
//! Relay and gossip traffic are counted at the transport seam ([`seam`]).

mod seam;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sse_cluster::broker::Broker;
use sse_cluster::clock::Clock;
use sse_cluster::node::Node;

use crate::cluster::{self, node_name, Plan};
use crate::trace::{Record, Trace, What};
use crate::workload::{self, PublisherSpec, SubscriberSpec, HTTP_PORT};

pub use seam::{Counts, Dial};

/// The cluster sizes of the table.
pub const SIZES: [usize; 5] = [3, 5, 9, 17, 33];
/// The quiet window before `publish_at` where idle traffic is measured.
const IDLE: Duration = Duration::from_millis(2500);
/// Publishes on node 0 around the join (the newcomer's first relayed events), from
/// half a second before it until the quiet window.
const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// How often the seam's counters are sampled.
const SAMPLE: Duration = Duration::from_millis(20);

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Setup {
    pub nodes: usize,
    /// Fraction of messages lost on every node-to-node link (turmoil breaks the
    /// link for that message and drops what is in flight on it).
    pub loss: f64,
    /// Measured publishes, and the time between two of them.
    pub events: u32,
    pub interval: Duration,
    pub seed: u64,
    /// The timeline (see the module docs); `settle` is the most time left after the
    /// last publish for stalled relay streams to resume (a run ends as soon as every
    /// subscriber has every event).
    pub join_at: Duration,
    pub publish_at: Duration,
    pub settle: Duration,
}

impl Setup {
    /// The table's defaults: 1000 events, one every 10 ms (100/s over the cluster).
    pub fn new(nodes: usize, loss: f64) -> Setup {
        Setup {
            nodes,
            loss,
            events: 1000,
            interval: Duration::from_millis(10),
            seed: 1,
            join_at: Duration::from_secs(5),
            publish_at: Duration::from_secs(13),
            settle: Duration::from_secs(30),
        }
    }
}

/// What one run measured. Times are milliseconds of simulated time.
#[derive(Debug, Clone)]
pub struct Measured {
    pub setup: Setup,
    /// From start until every first node pulled from every other (`None`: never).
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

/// Runs `setup` to the end. Like [`crate::run`]: one simulation at a time, on a
/// fresh thread, with mad-turmoil's generator reseeded and its clocks on.
pub fn measure(setup: &Setup) -> Result<Measured, String> {
    if setup.nodes < 2 || setup.events == 0 {
        return Err("a run needs two nodes and one event at least".into());
    }
    if setup.join_at < Duration::from_secs(1) || setup.publish_at < setup.join_at + IDLE * 2 {
        return Err("publish_at must leave the join 5 s, and join_at be 1 s at least".into());
    }
    let _one = crate::ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    crate::INIT_RNG.call_once(|| mad_turmoil::rand::set_rng(rand::rngs::StdRng::seed_from_u64(0)));
    *mad_turmoil::rand::get_rng() = rand::rngs::StdRng::seed_from_u64(setup.seed);
    let setup = setup.clone();
    std::thread::spawn(move || {
        let _clocks = mad_turmoil::time::SimClocksGuard::init();
        simulate(&setup)
    })
    .join()
    .map_err(|_| "the simulation panicked".to_owned())?
}

fn last_publish(setup: &Setup) -> Duration {
    setup.publish_at + setup.interval * (setup.events - 1)
}

fn end(setup: &Setup) -> Duration {
    last_publish(setup) + setup.settle
}

/// The plan `cluster::node_config` reads: the simulation's defaults.
fn plan(setup: &Setup) -> Plan {
    Plan {
        name: format!("scale-{}", setup.nodes),
        nodes: setup.nodes,
        late_nodes: vec![setup.nodes - 1],
        subscribers: Vec::new(),
        publishers: Vec::new(),
        faults: Vec::new(),
        probe_at: end(setup),
        subscriber_buffer: 512,
        replay_age: Duration::from_secs(60),
        fault_disable_dedup: false,
        drain_timeout: Duration::from_secs(10),
    }
}

/// The handles of each node's broker once it runs, for the driver to read.
type Brokers = Rc<RefCell<Vec<Option<Broker>>>>;

fn add_node(
    sim: &mut turmoil::Sim<'_>,
    setup: &Setup,
    i: usize,
    ips: &[IpAddr],
    seam: &Arc<seam::Seam>,
    brokers: &Brokers,
) {
    let config = cluster::node_config(&plan(setup), i, ips);
    let origin = cluster::origin_for(setup.seed, i, 1);
    let network = seam::CountingNetwork {
        me: i,
        seam: seam.clone(),
    };
    let (brokers, ips, seam) = (brokers.clone(), ips.to_vec(), seam.clone());
    sim.host(node_name(i), move || {
        let config = config.clone();
        let network = network.clone();
        let (brokers, ips, seam) = (brokers.clone(), ips.clone(), seam.clone());
        async move {
            let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
            let bound = turmoil::net::TcpListener::bind((config.bind, HTTP_PORT)).await?;
            let listener = seam::CountingListener {
                inner: bound,
                nodes: ips.clone(),
                seam: seam.clone(),
            };
            let clock = Clock::starting_at(cluster::EPOCH_MS + elapsed);
            let node = Node::new(config, origin, clock);
            brokers.borrow_mut()[i] = Some(node.broker().clone());
            let forever = std::future::pending::<()>();
            node.run_clustered(listener, network, HTTP_PORT, forever)
                .await?;
            Ok(())
        }
    });
}

fn set_loss(sim: &mut turmoil::Sim<'_>, loss: f64, a: usize, others: std::ops::Range<usize>) {
    if loss > 0.0 {
        for b in others.filter(|b| *b != a) {
            sim.set_link_fail_rate(node_name(a), node_name(b), loss);
        }
    }
}

fn simulate(setup: &Setup) -> Result<Measured, String> {
    let n = setup.nodes;
    let joiner = n - 1;
    let end = end(setup);
    let mut sim = turmoil::Builder::new()
        .rng_seed(setup.seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(cluster::EPOCH_MS))
        .simulation_duration(end + Duration::from_secs(30))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .udp_capacity(4096)
        .build();
    let trace = Trace::default();
    let seam = Arc::new(seam::Seam::default());
    let brokers: Brokers = Rc::new(RefCell::new(vec![None; n]));
    let ips: Vec<IpAddr> = (0..n).map(|i| sim.lookup(node_name(i))).collect();
    for i in 0..joiner {
        add_node(&mut sim, setup, i, &ips, &seam, &brokers);
    }
    for i in 0..joiner {
        set_loss(&mut sim, setup.loss, i, i + 1..joiner);
    }
    // Every subscriber in one client host: fewer hosts to step each tick.
    let subscribers: Vec<SubscriberSpec> = (0..n)
        .map(|i| SubscriberSpec {
            name: format!("s{i}"),
            nodes: vec![i],
            start: if i == joiner {
                setup.join_at + Duration::from_secs(1)
            } else {
                Duration::from_secs(1)
            },
            stop: end,
            read_delay: Duration::ZERO,
        })
        .collect();
    {
        let (ips, trace) = (ips.clone(), trace.clone());
        sim.client("subscribers", async move {
            let mut all = tokio::task::JoinSet::new();
            for spec in subscribers {
                all.spawn_local(workload::subscriber(spec, ips.clone(), trace.clone()));
            }
            while let Some(done) = all.join_next().await {
                done??;
            }
            Ok(())
        });
    }
    let ticker = PublisherSpec {
        name: "ticker".into(),
        p: 0,
        nodes: vec![0],
        start: setup.join_at - Duration::from_millis(500),
        count: ((setup.publish_at - IDLE - setup.join_at).as_millis() / TICK_INTERVAL.as_millis())
            as u32,
        interval: TICK_INTERVAL,
    };
    let publisher = PublisherSpec {
        name: "publisher".into(),
        p: 1,
        nodes: (0..n).collect(),
        start: setup.publish_at,
        count: setup.events,
        interval: setup.interval,
    };
    let origins = cluster::Origins::default();
    for i in 0..n {
        // Known before it starts: every node runs one generation.
        origins.set(i, cluster::origin_for(setup.seed, i, 1));
    }
    for spec in [ticker, publisher] {
        let name = spec.name.clone();
        let job = workload::publisher(spec, ips.clone(), origins.clone(), trace.clone());
        sim.client(name, job);
    }
    let mut joined = false;
    let mut first_event_at: Option<Duration> = None;
    let mut samples: Vec<(u64, Counts)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_check = Duration::ZERO;
    loop {
        let now = sim.elapsed();
        if !joined && now >= setup.join_at {
            add_node(&mut sim, setup, joiner, &ips, &seam, &brokers);
            set_loss(&mut sim, setup.loss, joiner, 0..n);
            joined = true;
        }
        if joined && first_event_at.is_none() {
            let applied = brokers.borrow()[joiner]
                .as_ref()
                .map_or(0, |b| b.metrics().relay_events_received.load(Relaxed));
            if applied > 0 {
                first_event_at = Some(now);
            }
        }
        if now >= next_sample {
            samples.push((now.as_millis() as u64, seam.counts()));
            next_sample += SAMPLE;
        }
        if now >= end || (now >= last_publish(setup) && now >= next_check) {
            if now >= end || all_delivered(&trace.records(), setup) {
                break;
            }
            next_check = now + Duration::from_millis(250);
        }
        sim.step().map_err(|e| format!("simulation failed: {e}"))?;
    }
    let mut records = trace.records();
    records.sort_by_key(|r| r.at_ms);
    Ok(summarise(
        setup,
        &records,
        &seam.dials(),
        &ips,
        first_event_at,
        &samples,
    ))
}

/// Whether every measured publish was answered and every subscriber has every
/// event that was published.
fn all_delivered(records: &[Record], setup: &Setup) -> bool {
    let (mut answered, mut published) = (0, 0);
    let mut got = std::collections::BTreeSet::new();
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

fn summarise(
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

    let published: Vec<u32> = records
        .iter()
        .filter_map(|r| match r.what {
            What::Published { p: 1, n, .. } => Some(n),
            _ => None,
        })
        .collect();
    // Per subscriber and event, the times it was delivered.
    let mut got: BTreeMap<(usize, (u32, u32)), Vec<u64>> = BTreeMap::new();
    for r in records {
        let (
            Some(sub),
            What::Event {
                event: None, data, ..
            },
        ) = (r.actor.strip_prefix('s'), &r.what)
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
        // The publisher posts in turn on every node.
        let accepting = (event as usize - 1) % n;
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
