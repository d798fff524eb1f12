//! Retry delays after a failed reconcile: capped, jittered exponential backoff.
//!
//! Kept by hand rather than taken from a crate: `backoff` is unmaintained, and
//! `backon`'s jitter adds up to the whole delay on top (the delay in [d, 2d)), where
//! replicas that failed together should retry sooner, not later: here the delay is
//! scaled into [d/2, d), as the self-managed tests pin.

use std::time::Duration;

/// First retry delay after an error; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay after errors (shorter when the check interval is).
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Capped, jittered exponential backoff.
#[derive(Debug)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    cap: Duration,
}

// === impl Backoff ===

impl Backoff {
    pub(super) fn new(check_interval: Duration) -> Self {
        Self {
            failures: 0,
            cap: check_interval.min(BACKOFF_CAP).max(BACKOFF_BASE),
        }
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next retry: base × 2^failures, capped, then scaled by a
    /// random factor in [0.5, 1) so replicas that failed together do not retry together.
    pub(super) fn next_delay(&mut self) -> Duration {
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        exp.min(self.cap).mul_f64(0.5 + random_unit() / 2.0)
    }
}

// === helpers ===

/// A number in [0, 1) from the standard library's per-process random hash keys.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
