//! Per-endpoint load and health: requests in flight and EWMA latency (for `ewma`), and
//! passive outlier ejection: an endpoint that refuses connections is ejected at once, one
//! that fails requests 5 times in a row too; each ejection lasts twice as long as the
//! previous one (1 s up to 60 s), and a success resets the count.
use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const CONSECUTIVE_FAILURES: u32 = 5;
const BASE_EJECTION_MS: u64 = 1_000;
const MAX_EJECTION_MS: u64 = 60_000;
/// EWMA decay time: older samples weigh e^(-dt/TAU).
const TAU_MS: f64 = 10_000.0;
/// Cost of an endpoint with no sample yet (1 ms), so new endpoints get traffic.
const INITIAL_EWMA_NS: u64 = 1_000_000;

/// Milliseconds since the process's first call (a monotonic clock shared by all threads).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// How one request to an endpoint went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The TCP (or TLS) connection could not be made: the endpoint is likely gone.
    ConnectFailure,
    /// Timeout, broken connection, or a retryable status.
    Failure,
}

#[derive(Debug)]
pub struct EndpointState {
    inflight: AtomicU32,
    ewma_ns: AtomicU64,
    last_sample_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            inflight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(INITIAL_EWMA_NS),
            last_sample_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }
}

impl EndpointState {
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.ewma_ns.load(Ordering::Relaxed))
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// EWMA latency x (in flight + 1), in ns.
    pub(super) fn cost(&self, _now: u64) -> u64 {
        self.ewma_ns
            .load(Ordering::Relaxed)
            .saturating_mul(u64::from(self.inflight()) + 1)
    }

    pub(super) fn start(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finish(&self, outcome: Outcome, latency: Duration) {
        // Saturating: a report without start (a failed connect) must not wrap.
        let _ = self
            .inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.ejections.store(0, Ordering::Relaxed);
                self.sample(latency);
            }
            Outcome::ConnectFailure | Outcome::Failure => {
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                // A failure is slow for the client: weigh it like a 1 s response.
                self.sample(latency.max(Duration::from_secs(1)));
            }
        }
    }

    /// Peak EWMA (as linkerd and Finagle): a slower sample is taken at once, a faster one
    /// decays the average by the time since the last sample (at least 5% per sample, so
    /// that bursts within one millisecond still move it).
    fn sample(&self, latency: Duration) {
        let now = now_ms();
        let last = self.last_sample_ms.swap(now, Ordering::Relaxed);
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if sample >= old {
            sample
        } else {
            let w = (-(now.saturating_sub(last) as f64) / TAU_MS)
                .exp()
                .min(0.95);
            (old as f64 * w + sample as f64 * (1.0 - w)) as u64
        };
        // Races between threads lose a sample at worst; no lock on this path.
        self.ewma_ns.store(new, Ordering::Relaxed);
    }

    pub(super) fn wants_ejection(&self, outcome: Outcome) -> bool {
        outcome == Outcome::ConnectFailure
            || self.consecutive_failures.load(Ordering::Relaxed) >= CONSECUTIVE_FAILURES
    }

    /// Ejects the endpoint unless it already is; true when it was ejected now.
    pub(super) fn eject(&self, now: u64) -> bool {
        if self.is_ejected(now) {
            return false;
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let ms = BASE_EJECTION_MS.saturating_mul(1 << n).min(MAX_EJECTION_MS);
        self.ejected_until_ms.store(now + ms, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }
}
