//! Clocks. Everything is CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`), the clock
//! userspace writes times in too; what differs is how precisely, and what it costs here:
//!
//! | read | cost per call (this VM) |
//! | --- | --- |
//! | `bpf_ktime_get_ns` (precise) | ~45 ns |
//! | `bpf_ktime_get_coarse_ns` (last tick) | ~22 ns |
//! | `bpf_jiffies64` (inlined by the verifier to one load) | ~0-3 ns |
//!
//! [`coarse_ns`] therefore reads the tick clock only when `jiffies` moved since this CPU
//! last read it, and otherwise returns the value it cached (per-CPU `CLOCK`): the same
//! tick-resolution time for the price of a load and a compare. Jiffies and the tick clock
//! are advanced together by the tick (and on the first interrupt after a tickless idle),
//! jiffies first, so the cached value is at most two ticks behind the precise clock.
use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};

use crate::maps::CLOCK;

/// How far [`coarse_ns`] may lag [`now_ns`]: two ticks (see the module comment) at the
/// slowest common tick rate (HZ 100), plus one for margin.
pub const COARSE_LAG_NS: u64 = 30_000_000;

/// This CPU's cached tick time and the jiffies it was read at.
#[repr(C)]
pub struct TickCache {
    jiffies: u64,
    ns: u64,
}

/// CLOCK_MONOTONIC in ns, precisely.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC at tick resolution: at most [`COARSE_LAG_NS`] behind [`now_ns`].
#[inline(always)]
pub fn coarse_ns() -> u64 {
    // SAFETY: no preconditions (inlined by the verifier into a load of `jiffies`).
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(c) = CLOCK.get_ptr_mut(0) else {
        // SAFETY: no preconditions.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's element of a per-CPU array; nothing else runs on this CPU now.
    let c = unsafe { &mut *c };
    if c.jiffies != jiffies {
        c.jiffies = jiffies;
        // SAFETY: no preconditions.
        c.ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
    c.ns
}
