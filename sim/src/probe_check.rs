//! The end-of-run probe's invariants: channel lifecycle (nothing of a channel is
//! left on any node once every subscriber left and the replay age passed) and
//! membership convergence after the heal.

use std::collections::BTreeSet;

use crate::trace::{Record, What};

pub(crate) fn check_probes(records: &[Record], violate: &mut impl FnMut(&'static str, String)) {
    let probes: Vec<&What> = records
        .iter()
        .filter(|r| matches!(r.what, What::Probe { .. } | What::ProbeFailed { .. }))
        .map(|r| &r.what)
        .collect();
    if probes.is_empty() {
        violate("probe", "the end-of-run probe did not run".into());
    }
    let probed: BTreeSet<String> = probes
        .iter()
        .filter_map(|w| match w {
            What::Probe { node, .. } | What::ProbeFailed { node, .. } => {
                Some(crate::plan::node_name(*node))
            }
            _ => None,
        })
        .collect();
    for what in probes {
        match what {
            What::Probe {
                node,
                channels,
                dormant_channels,
                history_events,
                members_alive,
            } => {
                if *channels != 0 || *dormant_channels != 0 || *history_events != 0 {
                    violate(
                        "lifecycle",
                        format!("n{node} still holds channels after every subscriber left and the replay age passed: {channels} channels, {dormant_channels} dormant, {history_events} history events"),
                    );
                }
                let alive: BTreeSet<String> = members_alive.iter().cloned().collect();
                if !probed.is_subset(&alive) {
                    violate(
                        "membership",
                        format!("n{node} sees alive {alive:?}, expected {probed:?}"),
                    );
                }
            }
            What::ProbeFailed { node, reason } => violate("probe", format!("n{node}: {reason}")),
            _ => {}
        }
    }
}
