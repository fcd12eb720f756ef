//! Random fault schedules (tables of operations) with shrinking. A failure prints
//! the seed and the (shrunk) schedule; `PROPTEST_CASES` runs more.

use std::time::Duration;

use proptest::prelude::*;
use sse_cluster_sim::{run, scenarios, Fault};

fn fault() -> impl Strategy<Value = Fault> {
    let pair = (0usize..3, 1usize..3).prop_map(|(a, d)| (a, (a + d) % 3));
    prop_oneof![
        pair.clone()
            .prop_map(|(a, b)| Fault::Partition(vec![a], vec![b])),
        pair.clone().prop_map(|(a, b)| Fault::PartitionOneWay(a, b)),
        Just(Fault::HealAll),
        pair.clone().prop_map(|(a, b)| Fault::Hold(a, b)),
        pair.prop_map(|(a, b)| Fault::Release(a, b)),
        (0u32..30).prop_map(|p| Fault::Loss(f64::from(p) / 100.0)),
        (5u64..300).prop_map(|ms| Fault::Latency(Duration::from_millis(ms))),
        (0usize..3).prop_map(Fault::Crash),
        (0usize..3).prop_map(Fault::Restart),
    ]
}

fn schedule() -> impl Strategy<Value = Vec<(Duration, Fault)>> {
    prop::collection::vec(
        (
            (60u64..190).prop_map(|ds| Duration::from_millis(ds * 100)),
            fault(),
        ),
        0..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2),
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_fault_schedules_keep_the_contract(seed in 1u64..1_000_000, faults in schedule()) {
        let mut plan = scenarios::base("random", 3, &[0, 1, 2], faults);
        // Crashed nodes come back at the end so every node is probed.
        for node in 0..3 {
            plan.faults.push((sse_cluster_sim::plan::HEAL, Fault::Revive(node)));
        }
        let plan = scenarios::with_final_repairs(plan);
        let outcome = run(&plan, seed).map_err(TestCaseError::fail)?;
        prop_assert!(
            outcome.report.ok(),
            "seed {} schedule {:?}: {:#?}\n{}",
            seed, plan.faults, outcome.report.violations, outcome.summary()
        );
    }
}
