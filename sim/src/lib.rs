//! Deterministic simulation of an sse-cluster under turmoil.
//!
//! - [`plan`]: what a run does ([`Plan`]: nodes, workloads, fault schedule), the
//!   ports, names and timeline every run shares, and the nodes' origins.
//! - [`net`]: the transport seam over turmoil (UDP gossip, TCP relay and HTTP).
//! - [`cluster`]: a [`Plan`] run from a seed.
//! - [`workload`]: an EventSource-like subscriber, a publisher, the final probe.
//! - [`streams`]: streams of several channels and patterns, unwrapped per channel.
//! - [`trace`]: what every client saw, and its digest.
//! - [`check`]: the delivery contract as invariants over a trace.
//! - [`scenarios`]: named plans shared by the tests and the command.
//! - [`random`]: the random plan generator (`--scenario random`).
//! - [`coverage`]: what a run reached, and the summary of a sweep.
//! - [`scale`]: clusters of 3 to 33 nodes, measured (`--scale`).
//!
//! Determinism: a run is a pure function of its seed, wherever it comes in its
//! process. Each source of randomness or order is tied to the seed:
//! - mad-turmoil's generator (behind `getrandom`: chitchat's RNG and std's hash keys,
//!   so the iteration order of every `HashMap`) is reseeded from the seed, and a run
//!   happens on a fresh thread, so its maps draw fresh keys from it;
//! - mad-turmoil's simulated clocks stand in for the system's;
//! - turmoil's own generator (link latency, loss, host order) is seeded by the seed;
//! - tokio's per-runtime generator (the branch order of unbiased `select!`s, in
//!   chitchat's gossip loop, hyper-util and axum as well as ours, and which `watch`
//!   waiters wake first) is seeded by turmoil from its generator, which needs
//!   `--cfg tokio_unstable` (set in `.cargo/config.toml`); without it tokio seeds
//!   each runtime from a process-wide counter;
//! - tokio's task ids come from a process-wide counter and a host's tasks are dropped
//!   in an order that depends on them (see `align_task_ids`): every run starts
//!   them at the same residue.
//!
//! One run at a time per process (a lock), since the generator and the task counter
//! are process-wide.

pub mod check;
pub mod cluster;
pub mod coverage;
mod http;
pub mod net;
pub mod plan;
mod probe_check;
pub mod random;
pub mod scale;
pub mod scenarios;
pub mod shrink;
pub mod streams;
pub mod trace;
pub mod workload;

use std::sync::{Mutex, Once};

use rand::SeedableRng;

pub use check::{check, Report};
pub use plan::{Fault, Plan};

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub scenario: String,
    pub records: Vec<trace::Record>,
    pub report: Report,
    pub digest: String,
}

impl Outcome {
    /// The one-line JSON summary.
    pub fn summary(&self) -> String {
        serde_json::json!({
            "seed": self.seed,
            "scenario": self.scenario,
            "published": self.report.published,
            "delivered": self.report.delivered,
            "duplicates": self.report.duplicates,
            "out_of_order": self.report.out_of_order,
            "lost": self.report.lost,
            "lost_to_crash": self.report.lost_to_crash,
            "gaps_signalled": self.report.gaps_signalled,
            "violations": self.report.violations.len(),
            "trace_digest": self.digest,
            "coverage": coverage::of(&self.records, &self.report),
        })
        .to_string()
    }
}

static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());
static INIT_RNG: Once = Once::new();

/// Runs `plan` with `seed` and checks it. The same plan and seed give the same
/// trace, byte for byte, in any process and after any other runs (see the crate
/// docs).
pub fn run(plan: &Plan, seed: u64) -> Result<Outcome, String> {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Before the generator is reseeded: the runtime made here draws from it.
    align_task_ids();
    INIT_RNG.call_once(|| mad_turmoil::rand::set_rng(rand::rngs::StdRng::seed_from_u64(0)));
    *mad_turmoil::rand::get_rng() = rand::rngs::StdRng::seed_from_u64(seed);
    let plan_copy = plan.clone();
    let plan = plan.clone();
    // A fresh thread draws fresh (now seeded) hash keys for its maps.
    let records = std::thread::spawn(move || {
        let _clocks = mad_turmoil::time::SimClocksGuard::init();
        cluster::simulate(&plan, seed)
    })
    .join()
    .map_err(|_| "the simulation panicked".to_owned())??;
    let stayers = stayers(&plan_copy);
    let report = check(&records, &stayers);
    Ok(Outcome {
        seed,
        scenario: plan_copy.name.clone(),
        digest: trace::digest(&records),
        records,
        report,
    })
}

/// Spawns empty tasks until tokio's next task id is a multiple of four. tokio numbers
/// every task of the process from one counter, and a current-thread runtime (each
/// simulated host has one) files a task in one of four lists by `id & 3`; when a host
/// crashes or restarts, its tasks are dropped list by list, so the order in which its
/// sockets close, and with it the trace, would depend on how many tasks the process
/// made before this run. From the same residue, every run numbers its tasks alike.
fn align_task_ids() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to number tasks");
    loop {
        let id = runtime.spawn(async {}).id().to_string();
        if id.parse::<u64>().is_ok_and(|id| id % 4 == 3) {
            return;
        }
    }
}

/// Subscribers still there well after the last publish: the loss check covers them.
fn stayers(plan: &Plan) -> Vec<String> {
    let last_publish = plan
        .publishers
        .iter()
        .map(|p| p.start + p.interval * p.count)
        .max()
        .unwrap_or_default();
    plan.subscribers
        .iter()
        .filter(|s| s.stop >= last_publish + std::time::Duration::from_secs(8))
        .map(|s| s.name.clone())
        .collect()
}
