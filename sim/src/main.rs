//! `sse-cluster-sim --seed N --scenario NAME` (or `--seeds A..B`, `--scenario random`,
//! `--scenario all`, `--trace` to print the trace): one JSON summary line per run,
//! exit status 1 on any violation.

use std::process::ExitCode;

use sse_cluster_sim::scenarios;

fn usage() -> ExitCode {
    eprintln!(
        "usage: sse-cluster-sim [--seed N | --seeds A..B] [--scenario NAME[,NAME..]|random|all] [--trace]\n\
         scenarios: {}",
        scenarios::NAMES.join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // `--scale [3,5,9,17,33]`: the table of clusters of those sizes.
    if std::env::args().nth(1).as_deref() == Some("--scale") {
        return scale(std::env::args().nth(2));
    }
    let mut seeds = 1..2u64;
    let mut scenario = "random".to_owned();
    let mut print_trace = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => match args.next().and_then(|s| s.parse::<u64>().ok()) {
                Some(seed) => seeds = seed..seed + 1,
                None => return usage(),
            },
            "--seeds" => {
                let range = args.next().unwrap_or_default();
                match range.split_once("..").map(|(a, b)| (a.parse(), b.parse())) {
                    Some((Ok(a), Ok(b))) if a < b => seeds = a..b,
                    _ => return usage(),
                }
            }
            "--scenario" => match args.next() {
                Some(name) => scenario = name,
                None => return usage(),
            },
            "--trace" => print_trace = true,
            _ => return usage(),
        }
    }
    let names: Vec<&str> = if scenario == "all" {
        scenarios::NAMES.to_vec()
    } else {
        scenario.split(',').collect()
    };
    let runs: Vec<(u64, &str)> = seeds
        .flat_map(|seed| names.iter().map(move |name| (seed, *name)))
        .collect();
    if runs.len() > 1 {
        return run_each_in_a_child(&runs, print_trace);
    }
    let (seed, name) = runs[0];
    let Some(plan) = scenarios::by_name(name, seed) else {
        return usage();
    };
    let outcome = match sse_cluster_sim::run(&plan, seed) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("seed {seed} {name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    if print_trace {
        print!("{}", sse_cluster_sim::trace::serialize(&outcome.records));
    }
    for violation in &outcome.report.violations {
        eprintln!("seed {seed} {name}: {violation}");
    }
    // The dedup fault and the stop without drain are there to be caught: for them, a
    // clean report is the failure.
    let expected_bad = plan.fault_disable_dedup || name == "planned_stop_without_drain";
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

/// Runs each (seed, scenario) in a fresh process: tokio seeds every runtime from a
/// process-wide counter, so only the first simulation of a process is a pure
/// function of its seed.
fn run_each_in_a_child(runs: &[(u64, &str)], print_trace: bool) -> ExitCode {
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this executable to run each simulation apart");
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    for (seed, name) in runs {
        let mut command = std::process::Command::new(&me);
        command.args(["--seed", &seed.to_string(), "--scenario", name]);
        if print_trace {
            command.arg("--trace");
        }
        match command.status() {
            Ok(status) if status.success() => {}
            _ => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints the scale table, a row as each pair of runs ends; exit status 1 if a run
/// failed or lost exactly-once delivery.
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
