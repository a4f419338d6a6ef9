//! `FLOW_CACHE`: a per-CPU, direct-mapped copy of the `FLOWS` entries of established TCP
//! flows this CPU has seen, so a packet of a known flow finds its node with an array read
//! and a ten-word compare instead of hashing its 40-byte key in the shared LRU hash (which
//! costs about 45-60 ns here, the largest item on the flow-hit path).
//!
//! `FLOWS` stays the truth: it is what survives restarts, what every CPU shares, and what
//! userspace reads. The cache only ever answers what `FLOWS` answered, and an entry is
//! trusted only while
//! - its epoch is `Config::flow_epoch` (the daemon bumps it with every Maglev table and
//!   whenever it writes flows itself), and
//! - it was checked against `FLOWS` less than [`RECHECK_NS`] ago: an older entry is looked
//!   up again, which also keeps the flow recent in the LRU (a flow served from the cache
//!   would otherwise age out of `FLOWS` under pressure while still active), and drops the
//!   entry when another CPU saw the flow's FIN/RST or the LRU evicted it.
//!
//! SYNs never read it (a new connection on a reused 5-tuple is decided by `FLOWS` and
//! Maglev); a FIN/RST clears this CPU's entry together with the `FLOWS` entry. UDP flows are
//! not cached: their idle timeout lives in the `FLOWS` value.
use lb_common::{Config, FlowKey, words_eq};

use crate::{clock::coarse_ns, maps::FLOW_CACHE};

/// Slots of `FLOW_CACHE` per CPU (a power of two).
pub const FLOW_CACHE_SLOTS: u32 = 4096;

/// How long a cached entry is trusted before `FLOWS` is asked again (coarse clock, ns).
pub const RECHECK_NS: u64 = 1_000_000_000;

/// One slot: a flow, its node, and when and under which epoch `FLOWS` confirmed it.
#[repr(C, align(8))]
pub struct CachedFlow {
    key: [u32; 10],
    node: u32,
    epoch: u32,
    checked_ns: u64,
}

/// The flow's key as the ten words it was built from (see `FlowKey::from_words`).
#[inline(always)]
pub fn words(flow: &FlowKey) -> &[u32; 10] {
    // SAFETY: FlowKey is repr(C, align(4)), 40 bytes of plain integers (asserted in
    // lb-common), so it can be read as ten u32 words.
    unsafe { &*(flow as *const FlowKey as *const [u32; 10]) }
}

/// This CPU's slot for `flow`, and whether it holds `flow` (any epoch, any age).
#[inline(always)]
fn slot(w: &[u32; 10]) -> Option<(&'static mut CachedFlow, bool)> {
    // Sources and ports vary between flows; the destination is one of a few VIPs.
    let h = (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[8]).wrapping_mul(0x9e37_79b1);
    let p = FLOW_CACHE.get_ptr_mut(h >> 20 & (FLOW_CACHE_SLOTS - 1))?;
    // SAFETY: this CPU's element of a per-CPU array; nothing else runs on this CPU now.
    let c = unsafe { &mut *p };
    let same = words_eq(&c.key, w);
    Some((c, same))
}

/// The node of a cached flow still trusted (see the module comment), else `None`.
#[inline(always)]
pub fn get(flow: &FlowKey, cfg: &Config) -> Option<u32> {
    let (c, same) = slot(words(flow))?;
    if !same || c.epoch != cfg.flow_epoch {
        return None;
    }
    // Checked at most RECHECK_NS ago; saturating, as `checked_ns` may come from another
    // tick of the coarse clock than `now` on a CPU whose clock reads behind.
    if coarse_ns().saturating_sub(c.checked_ns) >= RECHECK_NS {
        return None;
    }
    Some(c.node)
}

/// Remembers that `FLOWS` just said `flow` goes to `node`.
#[inline(always)]
pub fn put(flow: &FlowKey, node: u32, cfg: &Config) {
    let w = words(flow);
    if let Some((c, _)) = slot(w) {
        c.key = *w;
        c.node = node;
        c.epoch = cfg.flow_epoch;
        c.checked_ns = coarse_ns();
    }
}

/// Forgets `flow` on this CPU (its FIN/RST was seen).
#[inline(always)]
pub fn forget(flow: &FlowKey) {
    if let Some((c, true)) = slot(words(flow)) {
        c.key = [0; 10];
    }
}
