//! The random search: plans drawn from seeds (`--scenario random`) keep the
//! contract on the real code, and find every planted bug by themselves.
//!
//! Each run is a fresh process of the simulation command, as in a sweep, so a seed
//! here is the same run as on the command line. The default suite runs a few seeds
//! (debug builds are slow); the sweeps that prove each bug is found within its bound
//! are `#[ignore]`d: `cargo test -p sse-cluster-sim --release --test random_search --
//! --ignored` (see the README).

use std::process::Command;

/// For each planted bug, the first seed of `1..` whose random plan finds it (from a
/// sweep with `--planted`), and the bound the ignored sweep test holds it to.
const FOUND_AT: &[(&str, u64, u64)] = &[
    ("dedup_off", 1, 10),
    ("relay_resume_off_by_one", 1, 40),
    ("replay_skips_first", 1, 40),
    ("silent_outbox_gap", 1, 200),
    ("early_unsubscribe", 1, 200),
    ("forget_relayed_ids", 1, 200),
];

struct Run {
    ok: bool,
    violations: u64,
    stdout: String,
    stderr: String,
}

fn sim(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_sse-cluster-sim"))
        .args(args)
        .output()
        .expect("run sse-cluster-sim");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default();
    Run {
        ok: output.status.success(),
        violations: summary["violations"].as_u64().unwrap_or(u64::MAX),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn random_seed(seed: u64, planted: Option<&str>) -> Run {
    let seed = seed.to_string();
    let mut args = vec!["--seed", &seed, "--scenario", "random"];
    if let Some(bug) = planted {
        args.extend(["--planted", bug]);
    }
    sim(&args)
}

/// A few random plans on the real code: no violation. `SIM_RANDOM_SEEDS=N` runs N.
#[test]
fn random_plans_keep_the_contract() {
    let n: u64 = std::env::var("SIM_RANDOM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    let range = format!("1..{}", n + 1);
    let run = sim(&["--seeds", &range, "--scenario", "random", "--jobs", "2"]);
    assert!(
        run.ok,
        "random plans violated the contract:\n{}\n{}",
        run.stderr, run.stdout
    );
    assert!(
        run.stdout.contains("coverage over"),
        "no coverage summary:\n{}",
        run.stdout
    );
}

/// Each planted bug at the seed the random search first found it: the checker
/// reports it, and the same seed on the real code is clean (so it is the bug that
/// is found, not the plan).
#[test]
fn each_planted_bug_is_caught_at_the_seed_that_found_it() {
    for (bug, seed, _) in FOUND_AT {
        let planted = random_seed(*seed, Some(bug));
        assert!(
            planted.violations > 0 && planted.violations != u64::MAX,
            "{bug}: seed {seed} no longer finds it\n{}",
            planted.stdout
        );
        let clean = random_seed(*seed, None);
        assert!(
            clean.ok && clean.violations == 0,
            "seed {seed} fails on the real code:\n{}\n{}",
            clean.stderr,
            clean.stdout
        );
    }
}

/// The random search alone finds every planted bug within its bound, and the real
/// code is clean over the same seeds.
#[test]
#[ignore = "a sweep of hundreds of seeds: run with --release --ignored (see README)"]
fn the_random_search_finds_every_planted_bug_within_its_bound() {
    let mut widest = 0;
    for (bug, _, bound) in FOUND_AT {
        let range = format!("1..{}", bound + 1);
        let run = sim(&["--seeds", &range, "--scenario", "random", "--planted", bug]);
        assert!(
            run.ok && run.stdout.contains(&format!("planted {bug}: found")),
            "{bug}: not found in seeds {range}\n{}",
            run.stdout
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        widest = widest.max(*bound);
    }
    let range = format!("1..{}", widest + 1);
    let clean = sim(&["--seeds", &range, "--scenario", "random"]);
    assert!(
        clean.ok,
        "the real code fails in seeds {range}:\n{}",
        clean.stderr
    );
}
