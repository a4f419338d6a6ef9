//! Waiting on conditions with a deadline, instead of sleeping and hoping.
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it returns `Some` or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
