//! Running an operation under a resiliency policy (contract §4.2): a timeout per attempt and a
//! retry schedule; no policy means exactly one attempt.

use std::time::Duration;

use rand::Rng;

/// daprd's exponential backoff (the Go `backoff` library daprd's kit configures): 500 ms
/// initial interval, ×1.5, ±50 % randomisation, capped at `maxInterval`, and giving up after
/// 15 minutes in all (not settable from the CRD).
const EXPONENTIAL_INITIAL: Duration = Duration::from_millis(500);
const EXPONENTIAL_MULTIPLIER: f64 = 1.5;
const EXPONENTIAL_RANDOMISATION: f64 = 0.5;
pub const EXPONENTIAL_MAX_ELAPSED: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub retry: Option<RetrySchedule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub backoff: Backoff,
    /// Retries after the first attempt; negative = unlimited.
    pub max_retries: i64,
    /// `matching.httpStatusCodes` ranges; empty = retry every failure.
    pub matching_http: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    Constant(Duration),
    Exponential { max_interval: Duration },
}

impl RetrySchedule {
    /// Whether a failure after `retries_done` retries (and `elapsed` since the first attempt)
    /// may be retried. A failure carrying an HTTP status outside `matching` is final; one
    /// without a status (RETRY, unknown status, connection error) is always retriable.
    pub fn should_retry(&self, retries_done: u32, status: Option<u16>, elapsed: Duration) -> bool {
        if self.max_retries >= 0 && i64::from(retries_done) >= self.max_retries {
            return false;
        }
        if let (Some(status), false) = (status, self.matching_http.is_empty()) {
            if !self.matching_http.iter().any(|(low, high)| (*low..=*high).contains(&status)) {
                return false;
            }
        }
        !matches!(self.backoff, Backoff::Exponential { .. }) || elapsed < EXPONENTIAL_MAX_ELAPSED
    }

    /// The wait before retry number `retry` (0 = the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        match self.backoff {
            Backoff::Constant(duration) => duration,
            Backoff::Exponential { max_interval } => {
                let base = EXPONENTIAL_INITIAL.as_secs_f64() * EXPONENTIAL_MULTIPLIER.powi(retry.min(64) as i32);
                let base = base.min(max_interval.as_secs_f64());
                let spread = base * EXPONENTIAL_RANDOMISATION;
                let jittered = rand::rng().random_range((base - spread)..=(base + spread));
                Duration::from_secs_f64(jittered.max(0.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_retries_counts_retries_after_the_first_attempt() {
        let schedule =
            RetrySchedule { backoff: Backoff::Constant(Duration::ZERO), max_retries: 2, matching_http: vec![] };
        assert!(schedule.should_retry(0, None, Duration::ZERO));
        assert!(schedule.should_retry(1, None, Duration::ZERO));
        assert!(!schedule.should_retry(2, None, Duration::ZERO));
        let unlimited = RetrySchedule { max_retries: -1, ..schedule };
        assert!(unlimited.should_retry(1_000_000, None, Duration::from_secs(86_400)));
    }

    #[test]
    fn matching_filters_statuses_but_not_status_less_failures() {
        let schedule = RetrySchedule {
            backoff: Backoff::Constant(Duration::ZERO),
            max_retries: -1,
            matching_http: vec![(500, 599), (429, 429)],
        };
        assert!(schedule.should_retry(0, Some(503), Duration::ZERO));
        assert!(schedule.should_retry(0, Some(429), Duration::ZERO));
        assert!(!schedule.should_retry(0, Some(400), Duration::ZERO));
        assert!(schedule.should_retry(0, None, Duration::ZERO));
    }

    #[test]
    fn exponential_grows_within_jitter_caps_and_gives_up_after_15_minutes() {
        let schedule = RetrySchedule {
            backoff: Backoff::Exponential { max_interval: Duration::from_secs(2) },
            max_retries: -1,
            matching_http: vec![],
        };
        let first = schedule.delay(0);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(750), "{first:?}");
        let capped = schedule.delay(30);
        assert!(capped >= Duration::from_secs(1) && capped <= Duration::from_secs(3), "{capped:?}");
        assert!(!schedule.should_retry(3, None, EXPONENTIAL_MAX_ELAPSED));
    }
}
