//! Per-source limits: the penalty box and two GCRA token buckets (new connections/s and
//! packets/s) per source address in `SOURCES`.
//!
//! Updates race between CPUs (read, compute, write without a lock): two CPUs admitting
//! packets of the same source at the same nanosecond can both pass. The error is bounded
//! by the number of CPUs per refill interval, which is fine for flood protection and much
//! cheaper than a spin lock per packet.
//!
//! Clocks: reading CLOCK_MONOTONIC precisely costs about 18 ns per packet in this VM, the
//! tick-resolution copy (`bpf_ktime_get_coarse_ns`, the same clock a few ms behind) a few.
//! Expiries and windows measured in seconds (penalty box, UDP idle timeout, SYN-cookie
//! windows) use the coarse one. The buckets need the precise one, except to refuse a
//! packet that is over its limit by more than the coarse clock can lag: a flooding source
//! is dropped without reading the precise clock.
use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use lb_common::{Config, FlowKey, SourceKey, SourceState};

use crate::maps::{PENALTY, SOURCES};

#[inline(always)]
pub fn source_key(flow: &FlowKey) -> SourceKey {
    SourceKey::from_words(flow.src_words(), flow.family)
}

/// CLOCK_MONOTONIC in ns, precisely (userspace writes times in this clock too).
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC at tick resolution: at most [`COARSE_LAG_NS`] behind [`now_ns`].
#[inline(always)]
pub fn coarse_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// How far the coarse clock may lag the precise one: a tick is 1-10 ms (HZ 1000-100);
/// twice the longest, for margin.
const COARSE_LAG_NS: u64 = 20_000_000;

/// True when the source is in the penalty box and its sentence has not expired.
#[inline(always)]
pub fn penalized(src: &SourceKey) -> bool {
    match PENALTY.get_ptr(src) {
        // SAFETY: a u64 in a live map element; a torn read is impossible for aligned u64.
        Some(expiry) => (unsafe { *expiry }) > coarse_ns(),
        None => false,
    }
}

/// GCRA step: admit and advance `tat`, or refuse and leave it.
#[inline(always)]
fn gcra(tat: &mut u64, interval: u64, burst: u64) -> bool {
    // The bucket admits again from `tat + interval - burst` on. If that is later than the
    // precise clock can be now, refuse without reading it.
    if tat.saturating_add(interval).saturating_sub(burst) > coarse_ns() + COARSE_LAG_NS {
        return false;
    }
    let now = now_ns();
    let start = if *tat > now { *tat } else { now };
    let next = start + interval;
    if next - now > burst {
        return false;
    }
    *tat = next;
    true
}

/// The source's bucket state, created empty on first sight.
#[inline(always)]
fn state(src: &SourceKey) -> Option<&'static mut SourceState> {
    let p = match SOURCES.get_ptr_mut(src) {
        Some(p) => p,
        None => {
            let _ = SOURCES.insert(src, SourceState::default(), 0);
            SOURCES.get_ptr_mut(src)?
        }
    };
    // SAFETY: a live element of SOURCES; see the module comment on races.
    Some(unsafe { &mut *p })
}

/// Charges one packet to the source's packets/s bucket. `Err(())`: over the limit.
#[inline(always)]
pub fn charge_packet(src: &SourceKey, cfg: &Config) -> Result<(), ()> {
    if cfg.pps_interval_ns == 0 {
        return Ok(());
    }
    // A full LRU that cannot take the entry fails open: better than dropping everyone.
    let Some(s) = state(src) else { return Ok(()) };
    if gcra(&mut s.pps_tat, cfg.pps_interval_ns, cfg.pps_burst_ns) {
        Ok(())
    } else {
        Err(())
    }
}

/// Charges one new connection to the source's connections/s bucket.
#[inline(always)]
pub fn charge_conn(src: &SourceKey, cfg: &Config) -> Result<(), ()> {
    if cfg.conn_interval_ns == 0 {
        return Ok(());
    }
    let Some(s) = state(src) else { return Ok(()) };
    if gcra(&mut s.conn_tat, cfg.conn_interval_ns, cfg.conn_burst_ns) {
        Ok(())
    } else {
        Err(())
    }
}
