//! `sse-cluster-sim --seed N --scenario NAME` (or `--seeds A..B`, `--scenario random`,
//! `--scenario all`, `--trace` to print the trace, `--planted BUG` to plant a bug,
//! `--jobs J` to run J simulations at a time): one JSON summary line per run, and
//! after several runs a coverage summary; exit status 1 on any violation.
//! `sse-cluster-sim --scale [3,5,9,17,33]`: the table of clusters of those sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use sse_cluster::faults::Bug;
use sse_cluster_sim::coverage::Sweep;
use sse_cluster_sim::scenarios;

fn usage() -> ExitCode {
    eprintln!(
        "usage: sse-cluster-sim [--seed N | --seeds A..B] [--scenario NAME[,NAME..]|random|all]\n\
         \x20      [--planted BUG] [--jobs J] [--trace] [--shrink]\n\
         \x20      sse-cluster-sim --scale [N,N..]\n\
         scenarios: random, random_links, {}\n\
         planted bugs: {}",
        scenarios::NAMES.join(", "),
        Bug::ALL.map(Bug::name).join(", ")
    );
    ExitCode::from(2)
}

struct Args {
    seeds: std::ops::Range<u64>,
    scenario: String,
    print_trace: bool,
    planted: Option<Bug>,
    jobs: usize,
    shrink: bool,
    without: String,
}

fn parse() -> Option<Args> {
    let mut a = Args {
        seeds: 1..2,
        scenario: "random".to_owned(),
        print_trace: false,
        planted: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        shrink: false,
        without: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => {
                let seed = args.next()?.parse::<u64>().ok()?;
                a.seeds = seed..seed + 1;
            }
            "--seeds" => {
                let range = args.next()?;
                let (from, to) = range.split_once("..")?;
                let (from, to) = (from.parse().ok()?, to.parse().ok()?);
                if from >= to {
                    return None;
                }
                a.seeds = from..to;
            }
            "--scenario" => a.scenario = args.next()?,
            "--planted" => a.planted = Some(Bug::by_name(&args.next()?)?),
            "--jobs" => a.jobs = args.next()?.parse().ok().filter(|j| *j > 0)?,
            "--trace" => a.print_trace = true,
            "--shrink" => a.shrink = true,
            "--without" => a.without = args.next()?,
            _ => return None,
        }
    }
    Some(a)
}

fn main() -> ExitCode {
    // `--scale [3,5,9,17,33]`: the table of clusters of those sizes.
    if std::env::args().nth(1).as_deref() == Some("--scale") {
        return scale(std::env::args().nth(2));
    }
    let Some(args) = parse() else {
        return usage();
    };
    // `SIM_LOG=debug` (an env filter): the nodes' logs on stderr, for a failing seed.
    if let Ok(filter) = std::env::var("SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let names: Vec<String> = if args.scenario == "all" {
        scenarios::NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.scenario.split(',').map(str::to_owned).collect()
    };
    if names.iter().any(|n| scenarios::by_name(n, 1).is_none()) {
        return usage();
    }
    let runs: Vec<(u64, String)> = args
        .seeds
        .clone()
        .flat_map(|seed| names.iter().map(move |name| (seed, name.clone())))
        .collect();
    if runs.len() > 1 {
        return sweep(&runs, &args);
    }
    let (seed, name) = &runs[0];
    let mut plan = scenarios::by_name(name, *seed).expect("checked above");
    if args.planted.is_some() {
        plan.planted = args.planted;
    }
    if args.shrink {
        return shrink(plan, *seed, name, &args);
    }
    let plan = match sse_cluster_sim::shrink::without(plan, &args.without) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("--without: {error}");
            return usage();
        }
    };
    let outcome = match sse_cluster_sim::run(&plan, *seed) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("seed {seed} {name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_trace {
        print!("{}", sse_cluster_sim::trace::serialize(&outcome.records));
    }
    for violation in &outcome.report.violations {
        eprintln!("seed {seed} {name}: {violation}");
    }
    // The named scenarios with a planted fault are there to be caught: for them, a
    // clean report is the failure. Elsewhere (the random search), a violation is.
    let expected_bad =
        name != "random" && (plan.planted.is_some() || name == "planned_stop_without_drain");
    if !outcome.report.ok() || expected_bad {
        eprintln!("seed {seed} {name} schedule: {:?}", plan.faults);
    }
    println!("{}", outcome.summary());
    if outcome.report.ok() == expected_bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs each (seed, scenario) in a fresh process, `--jobs` at a time, prints each
/// summary line as it comes and the coverage over all of them at the end. A fresh
/// process per run: the runs of one process take turns (they share the seeded
/// generator), so processes are what run in parallel; and a run that panics or
/// hangs takes only its own process down.
fn sweep(runs: &[(u64, String)], args: &Args) -> ExitCode {
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this executable to run each simulation apart");
        return ExitCode::FAILURE;
    };
    let runs = Arc::new(runs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let (done, results) = mpsc::channel();
    let workers: Vec<_> = (0..args.jobs)
        .map(|_| {
            let (runs, next, done, me) = (runs.clone(), next.clone(), done.clone(), me.clone());
            let planted = args.planted;
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((seed, name)) = runs.get(i) else {
                    return;
                };
                let mut command = std::process::Command::new(&me);
                command.args(["--seed", &seed.to_string(), "--scenario", name]);
                if let Some(bug) = planted {
                    command.args(["--planted", bug.name()]);
                }
                let output = command.output();
                if done.send((*seed, name.clone(), output)).is_err() {
                    return;
                }
            })
        })
        .collect();
    drop(done);
    let mut coverage = Sweep::default();
    let mut failed = false;
    for (seed, name, output) in results {
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                eprintln!("seed {seed} {name}: cannot run: {e}");
                failed = true;
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = stdout.lines().last().unwrap_or("");
        println!("{summary}");
        if !output.status.success() {
            failed = true;
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
        }
        let value: serde_json::Value = serde_json::from_str(summary).unwrap_or_default();
        let counts: BTreeMap<String, u64> =
            serde_json::from_value(value["coverage"].clone()).unwrap_or_default();
        let violations = value["violations"]
            .as_u64()
            .unwrap_or(u64::from(!output.status.success()));
        coverage.add(seed, &counts, violations);
    }
    for worker in workers {
        let _ = worker.join();
    }
    coverage.failed.sort_unstable();
    println!("{}", coverage.table());
    println!("{} runs, {} at a time", coverage.runs, args.jobs);
    if let Some(bug) = args.planted {
        match coverage.failed.first() {
            Some(first) => println!(
                "planted {}: found in {} of {} runs, first at seed {first}",
                bug.name(),
                coverage.failed.len(),
                coverage.runs
            ),
            None => println!(
                "planted {}: not found in {} runs",
                bug.name(),
                coverage.runs
            ),
        }
        // With a planted bug, finding it is the success.
        return if coverage.failed.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The violation kinds the run of `seed` with `cuts` reports (in a fresh process),
/// from the `violation:KIND` keys of its summary's coverage; empty if it holds.
fn violation_kinds(
    me: &std::path::Path,
    seed: u64,
    name: &str,
    args: &Args,
    cuts: &[String],
) -> BTreeSet<String> {
    let mut command = std::process::Command::new(me);
    command.args(["--seed", &seed.to_string(), "--scenario", name]);
    command.args(["--without", &cuts.join(",")]);
    if let Some(bug) = args.planted {
        command.args(["--planted", bug.name()]);
    }
    let Ok(output) = command.output() else {
        return BTreeSet::new();
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default();
    summary["coverage"]
        .as_object()
        .into_iter()
        .flat_map(|coverage| coverage.keys())
        .filter_map(|key| key.strip_prefix("violation:"))
        .map(str::to_owned)
        .collect()
}

/// `--shrink`: cuts what the failure of `seed` does not need, one cut at a time
/// (each trial in a fresh process), and prints the smallest plan as a scenario. A
/// cut is kept only if the run still shows every kind of violation the whole plan
/// did: a trial that fails some other way (a cut can turn a retried duplicate into
/// a loss) is a different failure, not a smaller one.
fn shrink(plan: sse_cluster_sim::Plan, seed: u64, name: &str, args: &Args) -> ExitCode {
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this executable");
        return ExitCode::FAILURE;
    };
    let mut cuts: Vec<String> = Vec::new();
    let kinds = violation_kinds(&me, seed, name, args, &cuts);
    if kinds.is_empty() {
        eprintln!("seed {seed} {name} does not fail: nothing to shrink");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "shrink: keeping the violations {}",
        kinds.iter().cloned().collect::<Vec<_>>().join(",")
    );
    let still_fails =
        |cuts: &[String]| violation_kinds(&me, seed, name, args, cuts).is_superset(&kinds);
    let candidates = sse_cluster_sim::shrink::candidates(&plan, sse_cluster_sim::plan::HEAL);
    let mut trials = 0;
    for cut in candidates {
        // A count cut of a publisher already dropped changes nothing.
        let publisher = cut.split(':').next().unwrap_or("");
        if cut.contains(':') && cuts.iter().any(|c| c == publisher) {
            continue;
        }
        cuts.push(cut);
        trials += 1;
        if still_fails(&cuts) {
            eprintln!(
                "shrink: still fails without {}",
                cuts.last().map_or("", String::as_str)
            );
        } else {
            cuts.pop();
        }
    }
    let small = sse_cluster_sim::shrink::without(plan, &cuts.join(",")).expect("cuts it made");
    eprintln!("shrink: {trials} trials; cuts {}", cuts.join(","));
    println!(
        "{}",
        sse_cluster_sim::shrink::as_scenario(
            &small,
            &format!("shrunk_{name}_{seed}"),
            &format!(
                "Shrunk from `--seed {seed} --scenario {name} --without {}`{}.",
                cuts.join(","),
                args.planted
                    .map_or(String::new(), |b| format!(" --planted {}", b.name()))
            ),
        )
    );
    ExitCode::SUCCESS
}

fn scale(sizes: Option<String>) -> ExitCode {
    use sse_cluster_sim::scale::{self, Setup};
    let sizes: Vec<usize> = match sizes {
        None => scale::SIZES.to_vec(),
        Some(list) => match list.split(',').map(str::parse).collect() {
            Ok(sizes) => sizes,
            Err(_) => return usage(),
        },
    };
    let defaults = Setup::new(3, 0.0);
    print!(
        "{}",
        scale::table_header(defaults.events, defaults.interval)
    );
    let mut failed = false;
    for nodes in sizes {
        for loss in [0.0, 0.01] {
            match scale::measure(&Setup::new(nodes, loss)) {
                Ok(measured) => {
                    failed |= !measured.exactly_once();
                    print!("{}", scale::table_row(&measured));
                }
                Err(error) => {
                    eprintln!("{nodes} nodes, loss {loss}: {error}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
