//! One seed, one trace: the same seed run twice, each in a fresh process, gives a
//! byte-identical trace (compared by digest and in full).

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
