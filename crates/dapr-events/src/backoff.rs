//! Capped exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

/// A retry schedule: `initial * 2^attempt`, capped at `max`, with "equal jitter" (the delay is
/// drawn uniformly from the upper half of the exponential step).
///
/// Jitter matters because the relay retries many events at once after a sidecar outage; without
/// it every retry would hit the recovering sidecar in the same instant. Keeping the lower half
/// fixed guarantees the delay still grows, so a broken sidecar is not hammered either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The un-jittered delay before retry number `attempt` (0 = first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^20 * any sensible initial delay is far past any sensible cap; clamping the exponent
        // keeps the multiplication from overflowing.
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, jittered into `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_micros() as u64;
        let jitter = if spread == 0 { 0 } else { rand::rng().random_range(0..=spread) };
        half + Duration::from_micros(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_until_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(1), Duration::from_millis(200));
        assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
        assert_eq!(backoff.ceiling(6), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_the_upper_half_and_varies() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<_> = (0..200).map(|_| backoff.delay(4)).collect();
        for delay in &delays {
            assert!(*delay >= Duration::from_millis(800) && *delay <= Duration::from_millis(1600));
        }
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "200 draws were all {first:?}: no jitter");
    }
}
