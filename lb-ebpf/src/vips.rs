//! Which VIP a packet is for: `VIP_INDEX` first (an array slot the verifier inlines and a
//! compare of five words), `VIPS` only for a key whose slot holds another VIP and is marked
//! `spill`. A hash lookup in `VIPS` costs about 40 ns per packet here; the slot, a few.
use lb_common::{VipInfo, VipKey, vip_slot, words_eq};

use crate::maps::{VIP_INDEX, VIPS};

/// The VIP's id and flags, or `None` when `key` is not a VIP.
#[inline(always)]
pub fn lookup(key: &VipKey) -> Option<VipInfo> {
    let slot = VIP_INDEX.get(vip_slot(key))?;
    if slot.used != 0 && words_eq(&slot.key.words(), &key.words()) {
        return Some(slot.info);
    }
    if slot.spill == 0 {
        return None;
    }
    // SAFETY: VIPS values are replaced whole by userspace; copied out at once.
    VIPS.get_ptr(*key).map(|v| unsafe { *v })
}
