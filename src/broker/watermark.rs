//! The time an id vouches for: how far this node is caught up on every live origin.
//!
//! An id's time says "every event of this channel accepted (by any live origin)
//! before this time is within the id's frontier". Another node uses it to decide
//! whether it can serve a resume: it holds every event that reached it since its
//! channel's `known_from`, so if the id's time is at or after that, nothing falls
//! between the two. The node's own clock is not enough for this: a node that lags
//! behind one origin (a slow link, a cut, a held stream) would issue ids with the
//! current time while lacking that origin's recent events, and a resume elsewhere
//! would trust them and lose those events silently.
//!
//! So the time of an id is the minimum of now and, over every origin this node
//! follows, the time through which it has applied that origin's events. The
//! relay carries that time: a `tick` frame holds the serving node's clock read
//! before it read its outbox, so every event it accepted before the tick precedes
//! the tick in the stream (`cluster::relay`). An origin the cluster layer is told
//! about starts at the later of its process's start and what this node's first
//! pull asks for; one that ends (restarted, left after a drain, forgotten by
//! gossip) no longer holds ids back: what it never relayed here is lost with it
//! (gaps and `Broker::cannot_vouch` say so).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::event::Origin;

/// Per origin: through when its events are applied, and whether it holds ids back.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    through: Mutex<HashMap<Origin, Through>>,
    /// The minimum over the followed origins (`u64::MAX`: none), read per id.
    min_ms: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Through {
    ms: u64,
    followed: bool,
    /// The peer's relay sends no ticks (an older version): it is not waited for.
    untimed: bool,
}

impl Watermark {
    pub(crate) fn new() -> Self {
        Watermark {
            through: Mutex::new(HashMap::new()),
            min_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The time of an id made now (`now_ms`).
    pub(crate) fn id_time(&self, now_ms: u64) -> u64 {
        now_ms.min(self.min_ms.load(Relaxed))
    }

    fn with(&self, f: impl FnOnce(&mut HashMap<Origin, Through>)) {
        let mut through = self.through.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut through);
        let min = through
            .values()
            .filter(|t| t.followed && !t.untimed)
            .map(|t| t.ms)
            .min()
            .unwrap_or(u64::MAX);
        self.min_ms.store(min, Relaxed);
    }

    /// The origins this node follows now, each with the time it starts at if it is
    /// new (`start_ms`); every other origin known here stops holding ids back.
    pub(crate) fn follow(&self, origins: &[(Origin, u64)]) {
        self.with(|through| {
            for t in through.values_mut() {
                t.followed = false;
            }
            for &(origin, start_ms) in origins {
                through
                    .entry(origin)
                    .or_insert(Through {
                        ms: start_ms,
                        followed: true,
                        untimed: false,
                    })
                    .followed = true;
            }
        });
    }

    /// `origin`'s events accepted before `ms` (its clock, capped at `now_ms`) are
    /// all applied here.
    pub(crate) fn tick(&self, origin: Origin, ms: u64, now_ms: u64) {
        self.with(|through| {
            if let Some(t) = through.get_mut(&origin) {
                t.ms = t.ms.max(ms.min(now_ms));
                t.untimed = false;
            }
        });
    }

    /// `origin`'s relay sends no ticks: ids do not wait for it.
    pub(crate) fn untimed(&self, origin: Origin) {
        self.with(|through| {
            if let Some(t) = through.get_mut(&origin) {
                t.untimed = true;
            }
        });
    }

    /// `origin` ended for good (restarted as a new one, or left).
    pub(crate) fn forget(&self, origin: Origin) {
        self.with(|through| {
            through.remove(&origin);
        });
    }

    /// Where each followed origin stands (for `/status` and tests).
    #[cfg(test)]
    pub(crate) fn get(&self, origin: Origin) -> Option<u64> {
        let through = self.through.lock().unwrap_or_else(|p| p.into_inner());
        through.get(&origin).filter(|t| t.followed).map(|t| t.ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_the_slowest_followed_origin() {
        let w = Watermark::new();
        assert_eq!(w.id_time(1_000), 1_000, "nothing followed: now");
        w.follow(&[(1, 500), (2, 700)]);
        assert_eq!(w.id_time(1_000), 500);
        w.tick(1, 900, 1_000);
        assert_eq!(w.id_time(1_000), 700);
        w.tick(2, 5_000, 1_000);
        assert_eq!(w.get(2), Some(1_000), "a tick is capped at this node's now");
        assert_eq!(w.id_time(1_200), 900);
        w.tick(1, 800, 1_200);
        assert_eq!(w.get(1), Some(900), "a tick never moves back");
    }

    #[test]
    fn an_origin_no_longer_followed_or_untimed_holds_nothing_back() {
        let w = Watermark::new();
        w.follow(&[(1, 500), (2, 700)]);
        w.follow(&[(2, 9_999)]);
        assert_eq!(w.id_time(1_000), 700, "2 keeps its time; 1 is not followed");
        w.follow(&[(1, 0), (2, 0)]);
        assert_eq!(w.id_time(1_000), 500, "1 comes back where it stood");
        w.untimed(1);
        assert_eq!(w.id_time(1_000), 700);
        w.forget(2);
        assert_eq!(w.id_time(1_000), 1_000);
        w.tick(3, 10, 1_000);
        assert_eq!(
            w.id_time(1_000),
            1_000,
            "a tick of an unknown origin is ignored"
        );
    }
}
