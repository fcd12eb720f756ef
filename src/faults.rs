//! Faults the simulation suite plants to prove its checker and its random search can
//! find real mistakes. They exist only in builds with the `testing` feature (the `sim`
//! and `fuzz` crates turn it on); a production build has no `Faults` at all, only
//! the names of the bugs, and the broker's every question about them answers "no".

/// A planted bug: each is a plausible mistake in the delivery path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Relayed events are applied even when already seen, and a relay reconnect
    /// forgets its position (so it re-sends from the start).
    DedupOff,
    /// A relay stream resumed after a reconnect starts one event too far on (the
    /// puller takes its "next to ask for" for "last applied").
    RelayResumeOffByOne,
    /// A replay after a cursor leaves out the first event it should send.
    ReplaySkipsFirst,
    /// When a peer's outbox overflowed, the puller moves past the lost events without
    /// telling its subscribers (no `gap`).
    SilentOutboxGap,
    /// A subscriber that falls behind its buffer, or whose node closes its streams,
    /// is taken off its channel at once: the events still queued for it are never
    /// written, yet it is sent the channel's cursor, as if it had them.
    EarlyUnsubscribe,
    /// A node does not remember the publisher ids of events it learned through the
    /// relay, so a publish retried on it after the first copy reached it (the
    /// accepting node went away, or its answer was lost) is accepted again.
    ForgetRelayedIds,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 6] = [
        Bug::DedupOff,
        Bug::RelayResumeOffByOne,
        Bug::ReplaySkipsFirst,
        Bug::SilentOutboxGap,
        Bug::EarlyUnsubscribe,
        Bug::ForgetRelayedIds,
    ];

    /// Its name on the simulation's command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::DedupOff => "dedup_off",
            Bug::RelayResumeOffByOne => "relay_resume_off_by_one",
            Bug::ReplaySkipsFirst => "replay_skips_first",
            Bug::SilentOutboxGap => "silent_outbox_gap",
            Bug::EarlyUnsubscribe => "early_unsubscribe",
            Bug::ForgetRelayedIds => "forget_relayed_ids",
        }
    }

    pub fn by_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// The faults a node runs with (`BrokerSettings::faults`). Only builds with the
/// `testing` feature have it; without it the broker's `planted` is always false.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The planted bug, if any.
    pub planted: Option<Bug>,
}

#[cfg(feature = "testing")]
impl Faults {
    /// Whether `bug` is planted in this node.
    pub fn has(&self, bug: Bug) -> bool {
        self.planted == Some(bug)
    }
}
