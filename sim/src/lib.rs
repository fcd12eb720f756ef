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
//! Determinism: a run happens on a fresh thread, one at a time per process, after
//! mad-turmoil's generator (behind `getrandom`, so chitchat's RNG and std's hash
//! keys) is reseeded from the run's seed, with mad-turmoil's simulated clocks on.
//! One source stays uncontrolled: tokio seeds each runtime's RNG (`select!` branch
//! order) from a process-wide counter (`tokio::loom::std::rand::seed`), which turmoil
//! can override only under `--cfg tokio_unstable`. So a run is a pure function of
//! its seed when it is the first simulation of its process; later runs in the same
//! process can differ. The command runs each simulation in a fresh process, and the
//! determinism test compares two fresh processes.

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

/// Runs `plan` with `seed` and checks it. As the first simulation of a process,
/// the same plan and seed give the same trace, byte for byte (see the crate docs).
pub fn run(plan: &Plan, seed: u64) -> Result<Outcome, String> {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
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
