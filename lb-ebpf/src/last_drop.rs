//! `LAST_DROP`: per CPU, the last drop verdict for a source and VIP (ACL, penalty box,
//! packets/s, or new connections/s for TCP SYNs), so the next packet of a flood from that
//! source to that VIP is dropped right after parsing: one per-CPU slot read and a compare,
//! instead of the VIP lookup, `CONFIG`, the refusal cache and the checks before the one
//! that dropped it. Under a single-source flood, each of those touches a cache line of its
//! own beside the receive path's; measured in the flood benchmark with the receiver on
//! its own CPU (see the README), they were most of what an ACL drop cost above a bare
//! XDP_DROP.
//!
//! A verdict is kept while both
//! - the refusal that dropped the packet lasts (`refused`: never past the limit's own
//!   end, the penalty's expiry, or the ACL refusal's), and
//! - it is at most [`TRUST_NS`] old, which bounds how long a change the daemon makes (a
//!   VIP removed, a limit raised, a source let out of the penalty box) takes to reach a
//!   source this CPU is dropping, as `ACL_REFUSAL_NS` does for the ACLs.
//!
//! The key is the flow's 5-tuple without the source port (floods vary it): source,
//! destination, destination port, protocol, family.
use lb_common::{FlowKey, Reason, words_eq};

use crate::{clock::coarse_ns, flow_cache::words, maps::LAST_DROP, stats};

/// How long a verdict is trusted at most (coarse clock, ns).
pub const TRUST_NS: u64 = 100_000_000;

/// One CPU's last drop.
#[repr(C, align(8))]
pub struct Verdict {
    /// The flow's words with the source port cleared (see `key`).
    key: [u32; 10],
    /// The `STATS` index the drops are counted at (VIP and reason).
    stat: u32,
    /// 1: the verdict applies to TCP SYNs (without ACK) only.
    syn_only: u32,
    /// Trusted while the coarse clock is below this (0: empty).
    until: u64,
}

/// `flow`'s words as a verdict key: word 8 holds the ports (source port in its low half,
/// as `FlowKey::from_words` puts it).
#[inline(always)]
fn key(flow: &FlowKey) -> [u32; 10] {
    let mut w = *words(flow);
    w[8] &= 0xffff_0000;
    w
}

/// True (the packet is to be dropped, and was counted under the verdict's VIP and reason)
/// when this CPU's last verdict covers the packet; false: decide it the long way.
#[inline(always)]
pub fn covers(flow: &FlowKey, syn: bool, len: u64) -> bool {
    let Some(v) = LAST_DROP.get_ptr(0) else {
        return false;
    };
    // SAFETY: this CPU's element of a per-CPU array; nothing else runs on this CPU now.
    let v = unsafe { &*v };
    if v.until == 0 || !words_eq(&v.key, &key(flow)) {
        return false;
    }
    if (v.syn_only != 0 && !syn) || coarse_ns() >= v.until {
        return false;
    }
    stats::count_at(v.stat, len);
    true
}

/// Remembers that `flow`'s packets (TCP SYNs only, with `syn_only`) to VIP `vip_id` are
/// dropped for `reason` while the coarse clock is below `until`.
#[inline(always)]
pub fn record(flow: &FlowKey, vip_id: u32, reason: Reason, syn_only: bool, until: u64) {
    let Some(v) = LAST_DROP.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `covers`.
    let v = unsafe { &mut *v };
    let trust = coarse_ns() + TRUST_NS;
    v.key = key(flow);
    v.stat = reason.index(vip_id);
    v.syn_only = syn_only as u32;
    v.until = if until < trust { until } else { trust };
}
