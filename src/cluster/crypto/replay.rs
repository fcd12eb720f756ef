//! The replay guard: a relay request's nonce is accepted once (`PROTOCOL.md`,
//! "Relay handshake").

use std::collections::{BTreeMap, BTreeSet};

use super::{CryptoError, RELAY_WINDOW_MS, REPLAY_GUARD_CAPACITY};

/// Remembers the nonces of accepted relay requests so none is accepted twice.
///
/// A nonce is kept while its request could still pass the freshness check, that is
/// until `sent_at + RELAY_WINDOW_MS < now_ms`, and at most `capacity` nonces are kept
/// (when full, the one sent earliest goes). Every forgotten time raises a floor, and a
/// request sent at or before the floor is refused as [`CryptoError::Stale`]. So the
/// guard never accepts a replay, whatever the load and even if the caller's clock steps
/// back; under a flood of authentic requests it refuses slightly late ones instead.
/// Memory: about 100 bytes per remembered nonce, so ~400 KiB at the default capacity.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    capacity: usize,
    by_nonce: BTreeMap<[u8; 16], u64>,
    by_time: BTreeSet<(u64, [u8; 16])>,
    floor: Option<u64>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(REPLAY_GUARD_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            by_nonce: BTreeMap::new(),
            by_time: BTreeSet::new(),
            floor: None,
        }
    }

    /// How many nonces are remembered now.
    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }

    /// Accepts `nonce`, of a request sent at `sent_at`, if it was never accepted and
    /// is above the floor. The caller has checked the request's MAC and freshness.
    pub(super) fn admit(
        &mut self,
        nonce: [u8; 16],
        sent_at: u64,
        now_ms: u64,
    ) -> Result<(), CryptoError> {
        self.expire(now_ms);
        if self.by_nonce.contains_key(&nonce) {
            return Err(CryptoError::Replayed);
        }
        if self.below_floor(sent_at) {
            return Err(CryptoError::Stale);
        }
        while self.by_nonce.len() >= self.capacity && self.forget_oldest() {}
        if self.below_floor(sent_at) {
            return Err(CryptoError::Stale);
        }
        self.by_nonce.insert(nonce, sent_at);
        self.by_time.insert((sent_at, nonce));
        Ok(())
    }

    /// Forgets nonces whose requests would now fail the freshness check anyway.
    fn expire(&mut self, now_ms: u64) {
        while self
            .by_time
            .first()
            .is_some_and(|&(time, _)| time.saturating_add(RELAY_WINDOW_MS) < now_ms)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) -> bool {
        let Some((time, nonce)) = self.by_time.pop_first() else {
            return false;
        };
        self.by_nonce.remove(&nonce);
        self.floor = Some(self.floor.map_or(time, |floor| floor.max(time)));
        true
    }

    fn below_floor(&self, sent_at: u64) -> bool {
        self.floor.is_some_and(|floor| sent_at <= floor)
    }
}

/// The guard as the handshake drives it: through `verify_relay_request`.
#[cfg(test)]
mod tests {
    use super::super::testing::{key, CONTEXT, NOW};
    use super::*;

    #[test]
    fn replayed_request_is_refused_until_it_is_stale() {
        let header = key().relay_request([7; 16], NOW, CONTEXT);
        let mut guard = ReplayGuard::default();
        assert!(key()
            .verify_relay_request(&header, CONTEXT, NOW, &mut guard)
            .is_ok());
        for now in [NOW, NOW + 1, NOW + RELAY_WINDOW_MS] {
            let result = key().verify_relay_request(&header, CONTEXT, now, &mut guard);
            assert_eq!(result.unwrap_err(), CryptoError::Replayed, "{now}");
        }
        let result =
            key().verify_relay_request(&header, CONTEXT, NOW + RELAY_WINDOW_MS + 1, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
        // The same nonce at another time is a replay too, as long as it is remembered.
        let moved = key().relay_request([7; 16], NOW + 5, CONTEXT);
        let result = key().verify_relay_request(&moved, CONTEXT, NOW + 5, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Replayed);
    }

    #[test]
    fn replay_guard_forgets_expired_nonces() {
        let mut guard = ReplayGuard::default();
        for n in 0..10u8 {
            let header = key().relay_request([n; 16], NOW + u64::from(n), CONTEXT);
            assert!(key()
                .verify_relay_request(&header, CONTEXT, NOW, &mut guard)
                .is_ok());
        }
        assert_eq!(guard.len(), 10);
        let later = NOW + RELAY_WINDOW_MS + 5;
        let header = key().relay_request([99; 16], later, CONTEXT);
        assert!(key()
            .verify_relay_request(&header, CONTEXT, later, &mut guard)
            .is_ok());
        // Nonces sent at NOW..NOW+4 expired; NOW+5..NOW+9 and the new one remain.
        assert_eq!(guard.len(), 6);
        // Forgetting is safe even if the clock then steps back: the forgotten nonce is
        // refused rather than accepted again.
        let first = key().relay_request([0; 16], NOW, CONTEXT);
        let result = key().verify_relay_request(&first, CONTEXT, NOW, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
    }

    #[test]
    fn full_replay_guard_never_accepts_a_replay() {
        let mut guard = ReplayGuard::new(4);
        let headers: Vec<String> = (0..8u8)
            .map(|n| key().relay_request([n; 16], NOW + u64::from(n), CONTEXT))
            .collect();
        for header in &headers {
            assert!(key()
                .verify_relay_request(header, CONTEXT, NOW + 10, &mut guard)
                .is_ok());
            assert!(guard.len() <= 4);
        }
        for header in &headers {
            let result = key().verify_relay_request(header, CONTEXT, NOW + 10, &mut guard);
            assert!(
                matches!(result, Err(CryptoError::Replayed | CryptoError::Stale)),
                "{result:?}"
            );
        }
        // An evicted time is a floor: a new nonce sent at or before it is refused too.
        let late = key().relay_request([50; 16], NOW + 3, CONTEXT);
        let result = key().verify_relay_request(&late, CONTEXT, NOW + 10, &mut guard);
        assert_eq!(result.unwrap_err(), CryptoError::Stale);
        let fresh = key().relay_request([51; 16], NOW + 10, CONTEXT);
        assert!(key()
            .verify_relay_request(&fresh, CONTEXT, NOW + 10, &mut guard)
            .is_ok());
    }
}
