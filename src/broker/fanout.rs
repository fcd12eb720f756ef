//! The fan-out: what appends leave to do once every lock is released. Waking the
//! tasks of parked subscribers, and writing each event straight to the socket of
//! every parked subscriber that can take it ([`Sink`]), a batch of sockets warmed
//! ahead of their writes. The channel's log decides who gets what
//! (`Log::deliver`); this module does the system calls, then hands each write back
//! to the log to settle (`Log::settle`).

use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;

use super::channel::Channel;

/// Where a subscriber's bytes can go without waiting: its socket, written only
/// while the socket has room (a non-blocking write). Appends use it to hand an event
/// to a caught-up subscriber themselves rather than wake its task to do it.
pub trait Sink: Send + Sync {
    /// Writes what fits now: `Ok(n)` for the first `n` bytes, `WouldBlock` for none.
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;

    /// Loads what [`Sink::try_write`] will read first, and nothing else. A fan-out
    /// warms several sinks before writing to them, so that their cache misses
    /// overlap rather than each stalling its own write.
    fn warm(&self) {}
}

/// How many sinks a fan-out warms (see [`Sink::warm`]) before writing to them. Each
/// subscriber's socket state is cold by the time its write comes (the writes
/// before it went through the kernel's memory), and a cold line cost about 4% of
/// the node's CPU at 100,000 deliveries a second when each write met its own: a
/// core can fetch about this many lines at once, and they stay cached over as many
/// writes.
pub(crate) const WARM_AHEAD: usize = 16;

/// What appends leave to do once every lock is released: wake the tasks of parked
/// subscribers, and write events straight to the sinks of those that can take them.
#[derive(Default)]
pub(crate) struct Fanout {
    pub(super) wakers: Vec<Waker>,
    pub(super) writes: Vec<DirectWrites>,
    /// Pattern subscribers the appends were for (see `pattern`).
    pub(crate) pattern_readers: usize,
}

/// One appended frame and the parked subscribers it is written to directly.
pub(super) struct DirectWrites {
    pub(super) channel: Arc<Channel>,
    pub(super) frame: Bytes,
    pub(super) sinks: Vec<(u64, Arc<dyn Sink>)>,
}

impl Fanout {
    /// Wakes `waker` once the locks are released.
    pub(crate) fn wake(&mut self, waker: Waker) {
        self.wakers.push(waker);
    }

    /// Wakes, writes, and then settles each written subscriber (see [`Log::settle`]).
    /// Call with no lock held: this makes system calls.
    pub(crate) fn finish(self, now_ms: u64, closing: bool) -> Handed {
        self.wakers.into_iter().for_each(Waker::wake);
        let mut wakers = Vec::new();
        let mut results = Vec::new();
        let mut handed = Handed::default();
        for writes in self.writes {
            handed.events += writes.sinks.len();
            let frame = &writes.frame;
            let mut sinks = writes.sinks.into_iter();
            while !sinks.as_slice().is_empty() {
                let ahead = sinks.len().min(WARM_AHEAD);
                sinks.as_slice()[..ahead]
                    .iter()
                    .for_each(|(_, sink)| sink.warm());
                let batch = sinks.by_ref().take(ahead);
                results.extend(batch.map(|(id, sink)| Written {
                    id,
                    result: sink.try_write(frame),
                    sink,
                }));
            }
            handed.whole += results
                .iter()
                .filter(|w| matches!(w.result, Ok(n) if n == frame.len()))
                .count();
            let mut log = writes.channel.log();
            log.settle(results.drain(..), frame, now_ms, closing, &mut wakers);
            drop(log);
            wakers.drain(..).for_each(Waker::wake);
        }
        handed
    }
}

/// One subscriber's direct write of a frame: its sink, on loan from the subscriber
/// until the write settles, and what the sink took.
pub(crate) struct Written {
    pub(super) id: u64,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) result: std::io::Result<usize>,
}

/// What [`Fanout::finish`] handed to sinks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handed {
    /// Events handed over: each is delivered, by the write or by the task after it.
    pub(crate) events: usize,
    /// Those the socket took whole, so the subscriber's task had nothing to do.
    pub(crate) whole: usize,
}
