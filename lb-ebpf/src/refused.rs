//! `REFUSED`: sources this CPU refused, and until when (coarse clock) they stay refused,
//! so a flooding source is dropped after a per-CPU array read and a compare instead of a
//! lookup in the ACL tries, `PENALTY` or `SOURCES` (whose entries every CPU also writes).
//! Direct-mapped by address; a source evicted by another one that hashes to its slot just
//! goes back to the maps.
//!
//! What each end means:
//! - `conn_until`, `pps_until` (`ratelimit`): never later than the bucket's own end (`tat`
//!   only moves forward), so the cache refuses nothing the bucket would admit.
//! - `penalty_until` (`ratelimit`): the `PENALTY` expiry itself.
//! - `acl_until` (`acl`): [`ACL_REFUSAL_NS`] after the tries denied the source, so a source
//!   taken off `denylist-source-range` (or added to the allow list) is refused for at most
//!   that long after the daemon wrote the tries.
use lb_common::{SourceKey, words_eq};

use crate::maps::REFUSED;

/// Slots of `REFUSED` per CPU (a power of two).
pub const REFUSED_SLOTS: u32 = 1024;

/// How long a source the ACLs denied is refused from the cache before the tries are asked
/// again (coarse clock, ns).
pub const ACL_REFUSAL_NS: u64 = 100_000_000;

/// One slot (see the module comment for the ends).
#[repr(C)]
pub struct Refusal {
    addr: [u32; 4],
    family: u32,
    _pad: u32,
    /// New connections refused while the coarse clock is below this.
    pub conn_until: u64,
    /// Every packet refused while the coarse clock is below this.
    pub pps_until: u64,
    /// In the penalty box while the coarse clock is below this.
    pub penalty_until: u64,
    /// Denied by the ACLs while the coarse clock is below this.
    pub acl_until: u64,
}

impl Refusal {
    /// Gives the slot to `src`, with nothing refused yet.
    #[inline(always)]
    pub fn take(&mut self, src: &SourceKey) {
        (self.addr, self.family) = (src.addr_words(), src.family as u32);
        (self.conn_until, self.pps_until) = (0, 0);
        (self.penalty_until, self.acl_until) = (0, 0);
    }
}

/// Which refusal of a slot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Conn,
    Packets,
    Penalty,
    Acl,
}

impl Refusal {
    #[inline(always)]
    fn end(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::Conn => &mut self.conn_until,
            Kind::Packets => &mut self.pps_until,
            Kind::Penalty => &mut self.penalty_until,
            Kind::Acl => &mut self.acl_until,
        }
    }
}

/// This CPU's `REFUSED` slot for one source: whether it refuses the source now, and where
/// a new refusal of it is recorded.
pub struct Slot {
    r: Option<&'static mut Refusal>,
    /// The slot holds this source (not another one that hashes to it).
    same: bool,
}

impl Slot {
    #[inline(always)]
    pub fn of(src: &SourceKey) -> Slot {
        let a = src.addr_words();
        let h = (a[0] ^ a[1] ^ a[2] ^ a[3]).wrapping_mul(0x9e37_79b1);
        let Some(p) = REFUSED.get_ptr_mut(h >> 22 & (REFUSED_SLOTS - 1)) else {
            return Slot {
                r: None,
                same: false,
            };
        };
        // SAFETY: this CPU's element of a per-CPU array; nothing else runs on this CPU now.
        let r = unsafe { &mut *p };
        let same = words_eq(&r.addr, &a) && r.family == src.family as u32;
        Slot { r: Some(r), same }
    }

    /// The end of the source's `kind` refusal while the slot holds the source and the
    /// refusal lasts past `coarse`.
    #[inline(always)]
    pub fn refusal(&mut self, kind: Kind, coarse: u64) -> Option<u64> {
        let r = self.r.as_mut()?;
        let until = *r.end(kind);
        (self.same && coarse < until).then_some(until)
    }

    /// Records that the source's `kind` refusal lasts while the coarse clock is below
    /// `until`, taking the slot over if another source held it.
    #[inline(always)]
    pub fn record(self, src: &SourceKey, kind: Kind, until: u64) {
        if let Some(r) = self.r {
            if !self.same {
                r.take(src);
            }
            *r.end(kind) = until;
        }
    }
}
