//! Per-source limits: the penalty box and two GCRA token buckets (new connections/s and
//! packets/s) per source address in `SOURCES`.
//!
//! Updates race between CPUs (read, compute, write without a lock): two CPUs admitting
//! packets of the same source at the same nanosecond can both pass. The error is bounded
//! by the number of CPUs per refill interval, which is fine for flood protection and much
//! cheaper than a spin lock per packet.
//!
//! Clocks (see `clock`): expiries and windows measured in seconds (penalty box, UDP idle
//! timeout, SYN-cookie windows) use the cheap tick-resolution one. The buckets need the
//! precise one, except to refuse a packet that is over its limit by more than the coarse
//! clock can lag: a flooding source is dropped without reading the precise clock.
use lb_common::{Config, FlowKey, SourceKey, SourceState};

use crate::{
    clock::{COARSE_LAG_NS, coarse_ns, now_ns},
    maps::{PENALTY, SOURCES},
    refused::{Kind, Slot},
};

#[inline(always)]
pub fn source_key(flow: &FlowKey) -> SourceKey {
    SourceKey::from_words(flow.src_words(), flow.family)
}

/// `Some(expiry)` when the source is in the penalty box and its sentence has not expired.
/// A penalized source is remembered in this CPU's `REFUSED` slot until its expiry (entries
/// are never shortened by the daemon; turning the penalty box off skips this check).
#[inline(always)]
pub fn penalized(src: &SourceKey) -> Option<u64> {
    let coarse = coarse_ns();
    let mut slot = Slot::of(src);
    if let Some(until) = slot.refusal(Kind::Penalty, coarse) {
        return Some(until);
    }
    // SAFETY: a u64 in a live map element; a torn read is impossible for aligned u64.
    let expiry = PENALTY.get_ptr(src).map(|e| unsafe { *e })?;
    if expiry <= coarse {
        return None;
    }
    slot.record(src, Kind::Penalty, expiry);
    Some(expiry)
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

/// Charges one packet (or connection) to a bucket of the source (`bucket`: `Kind::Conn` or
/// `Kind::Packets`). `Err(until)`: over the limit, and every packet of the bucket is
/// refused while the coarse clock is below `until` (which may be past already: then only
/// this one is).
#[inline(always)]
fn charge(src: &SourceKey, interval: u64, burst: u64, bucket: Kind) -> Result<(), u64> {
    if interval == 0 {
        return Ok(());
    }
    let coarse = coarse_ns();
    let mut slot = Slot::of(src);
    if let Some(until) = slot.refusal(bucket, coarse) {
        return Err(until);
    }
    // A full LRU that cannot take the entry fails open: better than dropping everyone.
    let Some(s) = state(src) else { return Ok(()) };
    let tat = if bucket == Kind::Conn {
        &mut s.conn_tat
    } else {
        &mut s.pps_tat
    };
    let Err(until) = gcra(tat, interval, burst, coarse) else {
        return Ok(());
    };
    if coarse < until {
        slot.record(src, bucket, until);
    }
    Err(until)
}

/// Charges one packet to the source's packets/s bucket. `Err(until)`: over the limit (see
/// `charge`).
#[inline(always)]
pub fn charge_packet(src: &SourceKey, cfg: &Config) -> Result<(), u64> {
    charge(src, cfg.pps_interval_ns, cfg.pps_burst_ns, Kind::Packets)
}

/// Charges one new connection to the source's connections/s bucket (see `charge`).
#[inline(always)]
pub fn charge_conn(src: &SourceKey, cfg: &Config) -> Result<(), u64> {
    charge(src, cfg.conn_interval_ns, cfg.conn_burst_ns, Kind::Conn)
}
