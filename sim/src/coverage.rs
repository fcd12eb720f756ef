//! What a run reached (fault kinds, signals, delivery paths, violations) and the
//! summary of a sweep over many runs.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::check::Report;
use crate::trace::{Record, What};

/// Everything a sweep must reach, in the order the summary lists them.
pub const EXPECTED: &[&str] = &[
    "fault:partition",
    "fault:partition_of_groups",
    "fault:one_way",
    "fault:hold",
    "fault:loss",
    "fault:latency",
    "fault:crash",
    "fault:restart",
    "fault:stop",
    "fault:join",
    "signal:gap",
    "signal:reset",
    "signal:overflow",
    "path:replayed",
    "path:relayed",
    "path:resumed_elsewhere",
    "path:retry_deduplicated",
    "path:lost_to_crash",
    "path:lost_to_crash_signalled",
    "stream:several_channels",
    "stream:pattern",
];

fn fault_kind(text: &str) -> Option<&'static str> {
    let (name, args) = text.split_once('(').unwrap_or((text, ""));
    Some(match name {
        "Partition" => "fault:partition",
        "PartitionOneWay" => "fault:one_way",
        "Hold" => "fault:hold",
        "Loss" if !args.starts_with("0.0)") => "fault:loss",
        // The final repair sets the default latency back.
        "Latency" if args != "10ms)" => "fault:latency",
        "Crash" => "fault:crash",
        "Restart" | "Revive" => "fault:restart",
        "Stop" => "fault:stop",
        "Join" => "fault:join",
        _ => return None,
    })
}

/// The counts of one run, by coverage key.
pub fn of(records: &[Record], report: &Report) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |key: &str, n: u64| {
        if n > 0 {
            *counts.entry(key.to_owned()).or_default() += n;
        }
    };
    for r in records {
        // Events carried by streams of several channels, and by streams with a
        // pattern (counted under the latter only).
        if let What::Wrapped { stream, events } = &r.what {
            match stream.contains('*') {
                true => add("stream:pattern", *events),
                false => add("stream:several_channels", *events),
            }
        }
        if let What::Fault(text) = &r.what {
            if let Some(kind) = fault_kind(text) {
                add(kind, 1);
            }
            // A partition between groups (not one node against one).
            if text.starts_with("Partition([") && text.matches(',').count() > 1 {
                add("fault:partition_of_groups", 1);
            }
        }
    }
    for (name, n) in &report.signals {
        add(&format!("signal:{name}"), *n as u64);
    }
    add("path:replayed", report.replayed as u64);
    add("path:relayed", report.relayed as u64);
    add("path:resumed_elsewhere", report.resumed_elsewhere as u64);
    add(
        "path:retry_deduplicated",
        report.retries_deduplicated as u64,
    );
    add("path:lost_to_crash", report.lost_to_crash as u64);
    add(
        "path:redelivered_after_reset",
        report.redelivered_after_reset as u64,
    );
    add(
        "path:lost_to_crash_signalled",
        report.lost_to_crash_signalled as u64,
    );
    add("path:stranded_on_a_stopped_node", report.stranded as u64);
    for (kind, n) in &report.violation_kinds {
        add(&format!("violation:{kind}"), *n as u64);
    }
    counts
}

/// Coverage over many runs: for each key, the runs that reached it and the total.
#[derive(Debug, Default)]
pub struct Sweep {
    pub runs: u64,
    pub failed: Vec<u64>,
    pub reached: BTreeMap<String, (u64, u64)>,
}

impl Sweep {
    /// Adds one run's counts (its `coverage` object).
    pub fn add(&mut self, seed: u64, counts: &BTreeMap<String, u64>, violations: u64) {
        self.runs += 1;
        if violations > 0 {
            self.failed.push(seed);
        }
        for (key, n) in counts {
            let entry = self.reached.entry(key.clone()).or_default();
            entry.0 += u64::from(*n > 0);
            entry.1 += n;
        }
    }

    /// Keys every sweep must reach that this one did not reach at least `min_runs` times.
    pub fn short_of(&self, min_runs: u64) -> Vec<&'static str> {
        EXPECTED
            .iter()
            .filter(|key| {
                self.reached
                    .get(**key)
                    .is_none_or(|(runs, _)| *runs < min_runs)
            })
            .copied()
            .collect()
    }

    /// The table printed at the end of a sweep.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "coverage over {} runs (runs that reached it / total count):",
            self.runs
        );
        let mut keys: Vec<&str> = EXPECTED.to_vec();
        let extra: Vec<&str> = self
            .reached
            .keys()
            .map(String::as_str)
            .filter(|k| !EXPECTED.contains(k))
            .collect();
        keys.extend(extra);
        for key in keys {
            let (runs, total) = self.reached.get(key).copied().unwrap_or_default();
            let _ = writeln!(out, "  {key:<32} {runs:>6} runs {total:>9}");
        }
        let _ = writeln!(
            out,
            "runs with violations: {} {:?}",
            self.failed.len(),
            &self.failed[..self.failed.len().min(20)]
        );
        out
    }
}
