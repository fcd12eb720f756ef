//! Faults the simulation suite injects to prove its checker can fail. They exist only
//! in builds with the `testing` feature (the `sim` and `fuzz` crates turn it on); a
//! production build has an empty [`Faults`] and every question here answers "no".

/// The faults a node runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Apply relayed events even when already seen, so a test can show that the
    /// duplicate checker catches duplicates.
    #[cfg(feature = "testing")]
    pub disable_dedup: bool,
}

impl Faults {
    /// Whether relayed duplicates are applied anyway.
    pub fn dedup_disabled(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.disable_dedup;
        #[cfg(not(feature = "testing"))]
        false
    }
}
