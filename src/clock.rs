//! Time for the broker. Durations and deadlines come from `tokio::time` (virtual in
//! tests and simulations); the wall-clock reading that cursors carry is one epoch
//! taken at start plus tokio's elapsed time, so a simulation can fix the epoch.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A cheap, copyable clock: `now_ms` is milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ms: u64,
    started: Instant,
}

impl Clock {
    /// A clock whose wall time starts at `epoch_ms` now.
    pub fn starting_at(epoch_ms: u64) -> Self {
        Clock {
            epoch_ms,
            started: Instant::now(),
        }
    }

    /// A clock anchored to the system's wall clock (production).
    pub fn system() -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self::starting_at(epoch_ms)
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch_ms + self.started.elapsed().as_millis() as u64
    }
}
