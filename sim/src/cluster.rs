//! A simulated cluster driven by a plan: nodes (host factories, so a restart gets
//! a new generation), client workloads, and a fault schedule, all from one seed.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sse_cluster::clock::Clock;
use sse_cluster::node::Node;
use sse_cluster::Config;

use crate::net::{SimListener, SimNetwork};
use crate::plan::{node_name, origin_for, Fault, Origins, Plan, EPOCH_MS, GOSSIP_PORT, HTTP_PORT};
use crate::trace::{Trace, What};
use crate::workload;

/// The stop signal (SIGTERM) of each node's running process.
#[derive(Default, Clone)]
struct Stoppers(Rc<RefCell<Vec<Option<tokio::sync::oneshot::Sender<()>>>>>);

impl Stoppers {
    fn set(&self, node: usize, stop: tokio::sync::oneshot::Sender<()>) {
        let mut all = self.0.borrow_mut();
        if all.len() <= node {
            all.resize_with(node + 1, || None);
        }
        all[node] = Some(stop);
    }

    fn stop(&self, node: usize) {
        if let Some(stop) = self.0.borrow_mut().get_mut(node).and_then(Option::take) {
            let _ = stop.send(());
        }
    }
}

/// The configuration of node `me` of `plan`, its peers at `ips`.
pub(crate) fn node_config(plan: &Plan, me: usize, ips: &[IpAddr]) -> Config {
    let mut config = Config::default();
    let http = &mut config.http;
    http.port = HTTP_PORT;
    http.keep_alive = Duration::from_secs(1);
    http.retry = Duration::from_millis(300);
    http.write_stall_timeout = Duration::from_secs(5);
    let cluster = &mut config.cluster;
    cluster.gossip_port = GOSSIP_PORT;
    // Every node but itself is a seed (filtered by the cluster code): a node can
    // rejoin through any survivor.
    cluster.seeds = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, GOSSIP_PORT).to_string())
        .collect();
    cluster.advertise = Some(ips[me]);
    cluster.node_id = Some(node_name(me));
    cluster.client_timeout = Duration::from_secs(3);
    cluster.drain_timeout = plan.drain_timeout;
    let broker = &mut config.broker;
    broker.replay_age = plan.replay_age;
    broker.subscriber_buffer = plan.subscriber_buffer;
    broker.relay_queue_events = plan.relay_queue_events;
    broker.faults.planted = plan.planted;
    config
}

/// Registers node `i` as a host factory: every (re)start is a new generation.
#[allow(clippy::too_many_arguments)]
fn add_node(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    i: usize,
    seed: u64,
    ips: &[IpAddr],
    origins: &Origins,
    stoppers: &Stoppers,
    trace: &Trace,
) {
    let config = node_config(plan, i, ips);
    let stoppers = stoppers.clone();
    let generation = Rc::new(RefCell::new(0u64));
    let origins = origins.clone();
    let trace = trace.clone();
    sim.host(node_name(i), move || {
        let gen = {
            let mut g = generation.borrow_mut();
            *g += 1;
            *g
        };
        let origin = origin_for(seed, i, gen);
        origins.set(i, origin);
        trace.record(&node_name(i), What::NodeStarted { node: i, origin });
        let config = config.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stoppers.set(i, stop);
        let trace = trace.clone();
        async move {
            let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
            let listener = SimListener::bind(SocketAddr::new(config.http.bind, HTTP_PORT)).await?;
            let drain_timeout = config.cluster.drain_timeout;
            let node = Node::new(config, origin, Clock::starting_at(EPOCH_MS + elapsed));
            let signalled = Arc::new(Mutex::new(None));
            let signal_at = signalled.clone();
            let shutdown = async move {
                // A dropped sender (the host crashed or restarted) never stops it.
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
                *signal_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(tokio::time::Instant::now());
            };
            node.run_clustered(listener, SimNetwork, HTTP_PORT, shutdown)
                .await?;
            // Only the stop signal ends a run. The drain gives up at its bound and
            // then announces the departure, so a drain that ran out took longer.
            let signalled = *signalled.lock().unwrap_or_else(|p| p.into_inner());
            let drain_timed_out = !drain_timeout.is_zero()
                && signalled.is_some_and(|at| at.elapsed() >= drain_timeout);
            trace.record(
                &node_name(i),
                What::NodeExited {
                    node: i,
                    drain_timed_out,
                },
            );
            Ok(())
        }
    });
}

/// Every pair of nodes, as (index, turmoil host name).
fn node_pairs(n: usize) -> Vec<((usize, String), (usize, String))> {
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            pairs.push(((a, node_name(a)), (b, node_name(b))));
        }
    }
    pairs
}

/// Runs `plan` with `seed` to the end and returns its trace. Call through
/// [`crate::run`], which makes the run deterministic.
pub(crate) fn simulate(plan: &Plan, seed: u64) -> Result<Vec<crate::trace::Record>, String> {
    let end = plan.probe_at + Duration::from_secs(10);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(end + Duration::from_secs(30))
        .tick_duration(plan.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .udp_capacity(1024)
        .tcp_capacity(plan.tcp_capacity)
        .build();
    let trace = Trace::default();
    let origins = Origins::default();
    let stoppers = Stoppers::default();
    // Fix every node's address up front (names resolve in registration order).
    let ips: Vec<IpAddr> = (0..plan.nodes).map(|i| sim.lookup(node_name(i))).collect();
    for i in 0..plan.nodes {
        if !plan.late_nodes.contains(&i) {
            add_node(&mut sim, plan, i, seed, &ips, &origins, &stoppers, &trace);
        }
    }
    let mut published: Vec<String> = plan.publishers.iter().map(|p| p.channel.clone()).collect();
    published.sort_unstable();
    published.dedup();
    for spec in &plan.subscribers {
        sim.client(
            spec.name.as_str(),
            workload::subscriber(spec.clone(), published.clone(), ips.clone(), trace.clone()),
        );
    }
    for spec in &plan.publishers {
        sim.client(
            spec.name.as_str(),
            workload::publisher(spec.clone(), ips.clone(), origins.clone(), trace.clone()),
        );
    }
    let mut faults = plan.faults.clone();
    faults.sort_by_key(|(at, _)| *at);
    let mut faults = faults.into_iter().peekable();
    let mut running: Vec<bool> = (0..plan.nodes)
        .map(|i| !plan.late_nodes.contains(&i))
        .collect();
    let mut probe_added = false;
    // Nodes stopped as planned whose process may still be draining, and the
    // restarts that wait for it to exit (a service manager starts a stopped unit
    // again only once it has stopped).
    let mut stopping = vec![false; plan.nodes];
    let mut deferred: Vec<Fault> = Vec::new();
    loop {
        let now = sim.elapsed();
        let mut due: Vec<Fault> = std::mem::take(&mut deferred);
        while let Some((_, fault)) = faults.next_if(|(at, _)| *at <= now) {
            due.push(fault);
        }
        for fault in due {
            let at_ms = now.as_millis() as u64;
            trace.set_now(at_ms);
            if let Fault::Restart(i) | Fault::Revive(i) = fault {
                if stopping[i] && sim.is_host_running(node_name(i)) {
                    deferred.push(fault);
                    continue;
                }
                stopping[i] = false;
            }
            // Recorded only when it changes something (a crash of a node that is
            // down does not), so the trace and the coverage count real faults.
            let applied = apply(
                &mut sim,
                plan,
                &fault,
                seed,
                &ips,
                &origins,
                &stoppers,
                &trace,
                &mut running,
            );
            if applied {
                if let Fault::Stop(i) = fault {
                    stopping[i] = true;
                }
                trace.record_at(at_ms, "schedule", What::Fault(format!("{fault:?}")));
            }
        }
        if !probe_added && now + Duration::from_secs(1) >= plan.probe_at {
            // Registered just before its time, with the nodes running then.
            let nodes = (0..plan.nodes).filter(|i| running[*i]).collect();
            sim.client(
                "probe",
                workload::probe(plan.probe_at, nodes, ips.clone(), trace.clone()),
            );
            probe_added = true;
        }
        match sim.step() {
            Ok(true) if probe_added && faults.peek().is_none() && deferred.is_empty() => break,
            Ok(_) => {}
            Err(e) => return Err(format!("simulation failed: {e}")),
        }
    }
    let mut records = trace.records();
    // Stable order: by time, then by the order they were recorded.
    records.sort_by_key(|r| r.at_ms);
    Ok(records)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    fault: &Fault,
    seed: u64,
    ips: &[IpAddr],
    origins: &Origins,
    stoppers: &Stoppers,
    trace: &Trace,
    running: &mut [bool],
) -> bool {
    // Links exist only between hosts already registered (a late node has none yet).
    let registered = |i: usize| origins.current(i) != 0;
    let pairs = || {
        node_pairs(plan.nodes)
            .into_iter()
            .filter(|(a, b)| registered(a.0) && registered(b.0))
            .map(|(a, b)| (a.1, b.1))
    };
    match fault {
        Fault::Partition(a, b) => {
            let (a, b): (Vec<_>, Vec<_>) = (
                a.iter().copied().filter(|i| registered(*i)).collect(),
                b.iter().copied().filter(|i| registered(*i)).collect(),
            );
            if a.is_empty() || b.is_empty() {
                return false;
            }
            for x in &a {
                for y in &b {
                    sim.partition(node_name(*x), node_name(*y));
                }
            }
        }
        Fault::PartitionOneWay(a, b) | Fault::Hold(a, b) | Fault::Release(a, b)
            if !registered(*a) || !registered(*b) =>
        {
            return false;
        }
        Fault::PartitionOneWay(from, to) => sim.partition_oneway(node_name(*from), node_name(*to)),
        Fault::HealAll => {
            for (a, b) in pairs() {
                sim.repair(a.as_str(), b.as_str());
                sim.release(a.as_str(), b.as_str());
            }
        }
        Fault::Hold(a, b) => sim.hold(node_name(*a), node_name(*b)),
        Fault::Release(a, b) => sim.release(node_name(*a), node_name(*b)),
        Fault::Crash(i) => {
            if !running[*i] {
                return false;
            }
            sim.crash(node_name(*i));
            running[*i] = false;
        }
        Fault::Stop(i) => {
            if !running[*i] {
                return false;
            }
            stoppers.stop(*i);
            running[*i] = false;
        }
        Fault::Restart(i) => {
            if plan.late_nodes.contains(i) && origins.current(*i) == 0 {
                add_node(sim, plan, *i, seed, ips, origins, stoppers, trace);
            } else {
                sim.bounce(node_name(*i));
            }
            running[*i] = true;
        }
        Fault::Revive(i) => {
            if running[*i] || origins.current(*i) == 0 {
                return false;
            }
            sim.bounce(node_name(*i));
            running[*i] = true;
        }
        Fault::Join(i) => {
            if origins.current(*i) != 0 {
                return false;
            }
            add_node(sim, plan, *i, seed, ips, origins, stoppers, trace);
            running[*i] = true;
        }
        Fault::Loss(rate) => {
            for (a, b) in pairs() {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), *rate);
            }
        }
        Fault::Latency(max) => sim.set_max_message_latency(*max),
    }
    true
}
