//! Running an operation under a resiliency policy (contract §4.2): a timeout per attempt, a
//! retry schedule and a circuit breaker; no policy means exactly one attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

/// daprd's exponential backoff (the Go `backoff` library daprd's kit configures): 500 ms
/// initial interval, ×1.5, ±50 % randomisation, capped at `maxInterval`, and giving up after
/// 15 minutes in all (not settable from the CRD).
const EXPONENTIAL_INITIAL: Duration = Duration::from_millis(500);
const EXPONENTIAL_MULTIPLIER: f64 = 1.5;
const EXPONENTIAL_RANDOMISATION: f64 = 0.5;
pub const EXPONENTIAL_MAX_ELAPSED: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub retry: Option<RetrySchedule>,
    /// Shared by every operation under this policy, like daprd's breaker per component.
    pub breaker: Option<Arc<CircuitBreaker>>,
}

/// A circuit breaker with the semantics daprd gets from gobreaker: closed, it counts results
/// (reset every `interval` when that is non-zero) and opens when `trip` (CEL over the counts)
/// holds after a failure; open, it fails every call for `timeout`; then half-open, it lets
/// `max_requests` calls through and closes after that many successes, or opens again on a
/// failure. A call it refuses is final: the retry loop stops.
pub struct CircuitBreaker {
    trip_expr: String,
    trip: cel::Program,
    max_requests: u32,
    interval: Duration,
    timeout: Duration,
    state: Mutex<BreakerState>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("trip", &self.trip_expr).field("timeout", &self.timeout).finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u32,
    total_successes: u32,
    total_failures: u32,
    consecutive_successes: u32,
    consecutive_failures: u32,
}

#[derive(Debug)]
enum Phase {
    Closed { counts_since: Instant },
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct BreakerState {
    phase: Phase,
    counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open")]
pub struct BreakerOpen;

impl CircuitBreaker {
    /// gobreaker's defaults fill what the policy leaves out: 1 request, interval 0 (never reset
    /// the counts while closed), 60 s open, `consecutiveFailures > 5`.
    pub fn new(
        max_requests: Option<u32>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        trip: Option<&str>,
    ) -> Result<Self, String> {
        let trip_expr = trip.filter(|t| !t.trim().is_empty()).unwrap_or("consecutiveFailures > 5").to_owned();
        let program =
            cel::Program::compile(&trip_expr).map_err(|e| format!("invalid trip expression {trip_expr:?}: {e}"))?;
        Ok(Self {
            trip_expr,
            trip: program,
            max_requests: max_requests.filter(|n| *n > 0).unwrap_or(1),
            interval: interval.unwrap_or(Duration::ZERO),
            timeout: timeout.filter(|t| !t.is_zero()).unwrap_or(Duration::from_secs(60)),
            state: Mutex::new(BreakerState {
                phase: Phase::Closed { counts_since: Instant::now() },
                counts: Counts::default(),
            }),
        })
    }

    /// Admits one call, or refuses it while open (or half-open with its quota in use).
    pub fn admit(&self) -> Result<(), BreakerOpen> {
        let mut state = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        match state.phase {
            Phase::Closed { counts_since }
                if !self.interval.is_zero() && now.duration_since(counts_since) >= self.interval =>
            {
                state.phase = Phase::Closed { counts_since: now };
                state.counts = Counts::default();
            }
            Phase::Open { until } if now >= until => {
                state.phase = Phase::HalfOpen;
                state.counts = Counts::default();
            }
            Phase::Open { .. } => return Err(BreakerOpen),
            Phase::HalfOpen if state.counts.requests >= self.max_requests => return Err(BreakerOpen),
            _ => {}
        }
        state.counts.requests += 1;
        Ok(())
    }

    /// Records the outcome of an admitted call.
    pub fn record(&self, success: bool) {
        let mut guard = self.state.lock().expect("breaker lock");
        let state = &mut *guard;
        let counts = &mut state.counts;
        if success {
            counts.total_successes += 1;
            counts.consecutive_successes += 1;
            counts.consecutive_failures = 0;
            if matches!(state.phase, Phase::HalfOpen) && state.counts.consecutive_successes >= self.max_requests {
                state.phase = Phase::Closed { counts_since: Instant::now() };
                state.counts = Counts::default();
            }
            return;
        }
        counts.total_failures += 1;
        counts.consecutive_failures += 1;
        counts.consecutive_successes = 0;
        let trips = match state.phase {
            Phase::HalfOpen => true,
            Phase::Closed { .. } => self.trips(&state.counts),
            Phase::Open { .. } => false,
        };
        if trips {
            tracing::warn!(trip = %self.trip_expr, "circuit breaker opened");
            state.phase = Phase::Open { until: Instant::now() + self.timeout };
            state.counts = Counts::default();
        }
    }

    /// The trip expression over the counts; an error or a non-boolean does not trip.
    fn trips(&self, counts: &Counts) -> bool {
        let mut context = cel::Context::default();
        for (name, value) in [
            ("requests", counts.requests),
            ("totalSuccesses", counts.total_successes),
            ("totalFailures", counts.total_failures),
            ("consecutiveSuccesses", counts.consecutive_successes),
            ("consecutiveFailures", counts.consecutive_failures),
        ] {
            context.add_variable_from_value(name, cel::Value::Int(i64::from(value)));
        }
        matches!(self.trip.execute(&context), Ok(cel::Value::Bool(true)))
    }
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
    fn the_breaker_opens_on_its_trip_rule_then_half_opens_and_closes() {
        let breaker =
            CircuitBreaker::new(Some(1), None, Some(Duration::from_millis(50)), Some("consecutiveFailures > 2"))
                .unwrap();
        for _ in 0..3 {
            breaker.admit().unwrap();
            breaker.record(false);
        }
        assert_eq!(breaker.admit(), Err(BreakerOpen), "three consecutive failures trip it");
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().expect("half-open after the timeout lets one call through");
        assert_eq!(breaker.admit(), Err(BreakerOpen), "only max_requests calls while half-open");
        breaker.record(true);
        for _ in 0..2 {
            breaker.admit().unwrap();
            breaker.record(false);
        }
        breaker.admit().expect("closed again: two failures do not trip it");
        breaker.record(true);
    }

    #[test]
    fn a_failure_while_half_open_opens_it_again_and_bad_trips_are_rejected() {
        let breaker =
            CircuitBreaker::new(None, None, Some(Duration::from_millis(20)), Some("totalFailures >= 1")).unwrap();
        breaker.admit().unwrap();
        breaker.record(false);
        std::thread::sleep(Duration::from_millis(30));
        breaker.admit().unwrap();
        breaker.record(false);
        assert_eq!(breaker.admit(), Err(BreakerOpen));
        assert!(CircuitBreaker::new(None, None, None, Some("consecutiveFailures >")).is_err());
    }

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
