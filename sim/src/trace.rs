//! The trace of one run: everything clients saw and every fault, in simulated-time
//! order. Its digest is the run's fingerprint: one seed, one digest.

use std::cell::{Cell, RefCell};
use std::fmt::Write;
use std::rc::Rc;

/// One thing that happened, at `at_ms` of simulated time, to `actor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at_ms: u64,
    pub actor: String,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A node process started (first start or restart) with this origin.
    NodeStarted { node: usize, origin: u64 },
    /// A node process ended after a planned stop (a crash leaves no record).
    /// `drain_timed_out`: its drain ran for its whole bound (a non-zero
    /// `--shutdown.drainTimeout`) and gave up with peers still behind.
    NodeExited { node: usize, drain_timed_out: bool },
    /// A fault was injected (or healed) by the schedule.
    Fault(String),
    /// A subscriber dials `node`, resuming from `last_event_id`.
    Connecting {
        node: usize,
        last_event_id: Option<String>,
    },
    /// The stream answered 200.
    Opened { node: usize },
    /// One dispatched SSE event, with the last event id in effect after it.
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
    /// The stream ended or failed; the subscriber will reconnect.
    Disconnected { reason: String },
    /// The subscriber closed for good.
    Left,
    /// A connection of a stream of several channels or of a pattern ended, having
    /// carried `events` events (each also recorded under its channel's actor).
    Wrapped { stream: String, events: u64 },
    /// A publish answered 200: `(origin, seq)` is the event's place in its origin
    /// (`(0, 0)` for a `duplicate` answer). `sent_ms` is when the attempt was sent.
    Published {
        p: u32,
        n: u32,
        attempt: u32,
        channel: String,
        node: usize,
        sent_ms: u64,
        origin: u64,
        seq: u64,
        duplicate: bool,
    },
    /// A publish got no 200 (it may or may not have been accepted).
    PublishFailed {
        p: u32,
        n: u32,
        attempt: u32,
        node: usize,
        sent_ms: u64,
        reason: String,
    },
    /// What a node reported at the end of the run.
    Probe {
        node: usize,
        channels: usize,
        dormant_channels: u64,
        history_events: u64,
        members_alive: Vec<String>,
    },
    /// A probe that got no answer.
    ProbeFailed { node: usize, reason: String },
}

/// The shared, append-only trace of a run (one simulation runs on one thread).
#[derive(Debug, Clone, Default)]
pub struct Trace(Rc<RefCell<Vec<Record>>>, Rc<Cell<u64>>);

impl Trace {
    /// Records at the simulated time of the host it is called from, or, outside
    /// any host (a node registered by the schedule), at the schedule's time.
    pub fn record(&self, actor: &str, what: What) {
        let at_ms = turmoil::sim_elapsed()
            .map(|d| d.as_millis() as u64)
            .unwrap_or(self.1.get());
        self.record_at(at_ms, actor, what);
    }

    /// Sets the schedule's time (see [`Trace::record`]).
    pub fn set_now(&self, at_ms: u64) {
        self.1.set(at_ms);
    }

    pub fn record_at(&self, at_ms: u64, actor: &str, what: What) {
        self.0.borrow_mut().push(Record {
            at_ms,
            actor: actor.to_owned(),
            what,
        });
    }

    pub fn records(&self) -> Vec<Record> {
        self.0.borrow().clone()
    }
}

/// The serialised form of a trace, one record a line.
pub fn serialize(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let _ = writeln!(out, "{} {} {:?}", r.at_ms, r.actor, r.what);
    }
    out
}

/// FNV-1a (64 bit) of the serialised trace: stable across runs and builds.
pub fn digest(records: &[Record]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in serialize(records).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
