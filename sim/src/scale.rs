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

mod report;
mod seam;

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sse_cluster::broker::Broker;
use sse_cluster::clock::Clock;
use sse_cluster::node::Node;

use crate::cluster;
use crate::plan::{
    node_name, origin_for, Origins, Plan, PublisherSpec, SubscriberSpec, CHANNEL, EPOCH_MS,
    HTTP_PORT,
};
use crate::trace::Trace;
use crate::workload;

use report::{all_delivered, summarise};
pub use report::{table_header, table_row, Measured};
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
        relay_queue_events: 10_000,
        tcp_capacity: 64,
        planted: None,
        drain_timeout: Duration::from_secs(10),
        tick: Duration::from_millis(1),
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
    let origin = origin_for(setup.seed, i, 1);
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
            let bound = turmoil::net::TcpListener::bind((config.http.bind, HTTP_PORT)).await?;
            let listener = seam::CountingListener {
                inner: bound,
                nodes: ips.clone(),
                seam: seam.clone(),
            };
            let clock = Clock::starting_at(EPOCH_MS + elapsed);
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
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
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
            channels: vec![CHANNEL.to_owned()],
            hop_every: None,
        })
        .collect();
    {
        let (ips, trace) = (ips.clone(), trace.clone());
        sim.client("subscribers", async move {
            let mut all = tokio::task::JoinSet::new();
            for spec in subscribers {
                all.spawn_local(workload::subscriber(
                    spec,
                    Vec::new(),
                    ips.clone(),
                    trace.clone(),
                ));
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
        channel: CHANNEL.to_owned(),
        retry_with_id: false,
    };
    let publisher = PublisherSpec {
        name: "publisher".into(),
        p: 1,
        nodes: (0..n).collect(),
        start: setup.publish_at,
        count: setup.events,
        interval: setup.interval,
        channel: CHANNEL.to_owned(),
        retry_with_id: false,
    };
    let origins = Origins::default();
    for i in 0..n {
        // Known before it starts: every node runs one generation.
        origins.set(i, origin_for(setup.seed, i, 1));
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
