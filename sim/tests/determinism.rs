//! One seed, one trace: the same seed run twice, each in a fresh process, gives a
//! byte-identical trace (compared by digest and in full), and so do runs of the same
//! seed in one process, whatever ran before them.

use std::process::Command;

fn trace_of(scenario: &str, seed: u64) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sse-cluster-sim"))
        .args([
            "--seed",
            &seed.to_string(),
            "--scenario",
            scenario,
            "--trace",
        ])
        .output()
        .expect("run sse-cluster-sim");
    String::from_utf8(output.stdout).expect("utf-8 trace")
}

#[test]
fn one_seed_gives_one_trace() {
    let first = trace_of("restart_with_new_generation", 11);
    let second = trace_of("restart_with_new_generation", 11);
    assert!(first.contains("trace_digest"), "no summary line:\n{first}");
    assert!(first.lines().count() > 100, "trace too short:\n{first}");
    assert_eq!(first, second, "the same seed produced two different traces");
}

#[test]
fn another_seed_gives_another_trace() {
    let first = trace_of("flapping_links", 11);
    let other = trace_of("flapping_links", 12);
    assert_ne!(first, other, "the seed does not reach the simulation");
}

/// The digest of `seed`'s random plan, run in this process.
fn digest_in_process(seed: u64) -> String {
    let plan = sse_cluster_sim::scenarios::by_name("random", seed).expect("random plan");
    sse_cluster_sim::run(&plan, seed)
        .expect("the run completes")
        .digest
}

/// The digest printed by a fresh process running `seed` alone.
fn digest_alone(seed: u64) -> String {
    let summary = trace_of("random", seed);
    let line = summary.lines().last().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON summary");
    value["trace_digest"].as_str().expect("a digest").to_owned()
}

/// Several runs in one process, in sequence: a run depends on its seed only, not
/// on how many simulations ran before it in the process, nor on which. A sweep in
/// one process and a seed replayed alone give the same digest.
#[test]
fn runs_in_one_process_depend_only_on_their_seed() {
    if !cfg!(tokio_unstable) {
        panic!(
            "built without `--cfg tokio_unstable` (.cargo/config.toml; a RUSTFLAGS in the \
             environment replaces it): tokio's runtimes are then seeded per process"
        );
    }
    let order = [5, 6, 7, 6, 5, 5];
    let digests: Vec<(u64, String)> = order
        .iter()
        .map(|&seed| (seed, digest_in_process(seed)))
        .collect();
    for seed in [5, 6] {
        let alone = digest_alone(seed);
        for (s, digest) in &digests {
            if *s == seed {
                assert_eq!(
                    digest, &alone,
                    "seed {seed}: in-process runs {digests:?} differ from the run alone"
                );
            }
        }
    }
    assert_ne!(digests[0].1, digests[1].1, "seeds 5 and 6 gave one trace");
}
