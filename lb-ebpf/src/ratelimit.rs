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

use crate::maps::{PENALTY, REFUSED, SOURCES};

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

/// True when the source is in the penalty box and its sentence has not expired. A
/// penalized source is remembered in this CPU's `REFUSED` slot until its expiry (entries
/// are never shortened by the daemon; turning the penalty box off skips this check).
#[inline(always)]
pub fn penalized(src: &SourceKey) -> bool {
    let coarse = coarse_ns();
    let (slot, same) = refusal_slot(src);
    if let Some(r) = &slot
        && same
        && coarse < r.penalty_until
    {
        return true;
    }
    // SAFETY: a u64 in a live map element; a torn read is impossible for aligned u64.
    let Some(expiry) = PENALTY.get_ptr(src).map(|e| unsafe { *e }) else {
        return false;
    };
    if expiry <= coarse {
        return false;
    }
    if let Some(r) = slot {
        if !same {
            r.take(src);
        }
        r.penalty_until = expiry;
    }
    true
}

/// GCRA step: admit and advance `tat`, or refuse and leave it. `Err(until)`: refused, and
/// every packet of the bucket is refused while the coarse clock is below `until`.
#[inline(always)]
fn gcra(tat: &mut u64, interval: u64, burst: u64, coarse: u64) -> Result<(), u64> {
    // The bucket admits again from `due` on (`tat` only moves when a packet is admitted).
    // If that is later than the precise clock can be now, refuse without reading it.
    let due = tat.saturating_add(interval).saturating_sub(burst);
    let until = due.saturating_sub(COARSE_LAG_NS);
    if coarse < until {
        return Err(until);
    }
    let now = now_ns();
    if now < due {
        return Err(until);
    }
    *tat = if *tat > now { *tat } else { now } + interval;
    Ok(())
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

/// Sources this CPU refused, and until when (coarse clock) they stay refused: a flooding
/// source is dropped after a per-CPU array read and a compare, without hashing its key in
/// `SOURCES` (whose entries every CPU also writes). Direct-mapped by address; a source
/// evicted by another one that hashes to its slot just goes back to `SOURCES`. Refusals
/// never end early: `tat` only moves forward, so the real end is never before `until`.
#[repr(C)]
pub struct Refusal {
    addr: [u32; 4],
    family: u32,
    _pad: u32,
    /// New connections refused while the coarse clock is below this.
    conn_until: u64,
    /// Every packet refused while the coarse clock is below this.
    pps_until: u64,
    /// In the penalty box while the coarse clock is below this.
    penalty_until: u64,
}

impl Refusal {
    /// Gives the slot to `src`, with nothing refused yet.
    #[inline(always)]
    fn take(&mut self, src: &SourceKey) {
        (self.addr, self.family) = (src.addr_words(), src.family as u32);
        (self.conn_until, self.pps_until, self.penalty_until) = (0, 0, 0);
    }
}

/// Slots of `REFUSED` per CPU (a power of two).
pub const REFUSED_SLOTS: u32 = 1024;

/// Which bucket a charge is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Conn,
    Packets,
}

/// This CPU's `REFUSED` slot for `src`, and whether it holds `src`.
#[inline(always)]
fn refusal_slot(src: &SourceKey) -> (Option<&'static mut Refusal>, bool) {
    let a = src.addr_words();
    let h = (a[0] ^ a[1] ^ a[2] ^ a[3]).wrapping_mul(0x9e37_79b1);
    let Some(p) = REFUSED.get_ptr_mut(h >> 22 & (REFUSED_SLOTS - 1)) else {
        return (None, false);
    };
    // SAFETY: this CPU's element of a per-CPU array; nothing else runs on this CPU now.
    let r = unsafe { &mut *p };
    // Word by word: no memcmp in BPF.
    let same = r.addr[0] == a[0]
        && r.addr[1] == a[1]
        && r.addr[2] == a[2]
        && r.addr[3] == a[3]
        && r.family == src.family as u32;
    (Some(r), same)
}

/// Charges one packet (or connection) to a bucket of the source. `Err(())`: over the limit.
#[inline(always)]
fn charge(src: &SourceKey, interval: u64, burst: u64, bucket: Bucket) -> Result<(), ()> {
    if interval == 0 {
        return Ok(());
    }
    let coarse = coarse_ns();
    let (slot, same) = refusal_slot(src);
    if let Some(r) = &slot {
        let until = if bucket == Bucket::Conn {
            r.conn_until
        } else {
            r.pps_until
        };
        if same && coarse < until {
            return Err(());
        }
    }
    // A full LRU that cannot take the entry fails open: better than dropping everyone.
    let Some(s) = state(src) else { return Ok(()) };
    let tat = if bucket == Bucket::Conn {
        &mut s.conn_tat
    } else {
        &mut s.pps_tat
    };
    let Err(until) = gcra(tat, interval, burst, coarse) else {
        return Ok(());
    };
    if let Some(r) = slot
        && coarse < until
    {
        if !same {
            r.take(src);
        }
        if bucket == Bucket::Conn {
            r.conn_until = until;
        } else {
            r.pps_until = until;
        }
    }
    Err(())
}

/// Charges one packet to the source's packets/s bucket. `Err(())`: over the limit.
#[inline(always)]
pub fn charge_packet(src: &SourceKey, cfg: &Config) -> Result<(), ()> {
    charge(src, cfg.pps_interval_ns, cfg.pps_burst_ns, Bucket::Packets)
}

/// Charges one new connection to the source's connections/s bucket.
#[inline(always)]
pub fn charge_conn(src: &SourceKey, cfg: &Config) -> Result<(), ()> {
    charge(src, cfg.conn_interval_ns, cfg.conn_burst_ns, Bucket::Conn)
}
