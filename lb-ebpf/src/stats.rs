//! Counter updates. Per-CPU slots, so plain adds are race-free.
use lb_common::Reason;

use crate::maps::STATS;

#[inline(always)]
pub fn count(vip_id: u32, reason: Reason, bytes: u64) {
    count_at(reason.index(vip_id), bytes);
}

/// Counts at a `STATS` index (`Reason::index`).
#[inline(always)]
pub fn count_at(index: u32, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a preallocated array element.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
