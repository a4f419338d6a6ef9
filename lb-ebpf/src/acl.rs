//! Source ACLs: deny and allow LPM tries per family. Deny wins; an empty allow list
//! (`Config::allow_v4/6 == 0`) allows every source; an empty deny list is not looked up.
//! A denied source is remembered in this CPU's `REFUSED` slot for `ACL_REFUSAL_NS`, so a
//! flood from it is dropped without a trie walk per packet.
use aya_ebpf::btf_maps::lpm_trie::Key;
use lb_common::{Config, FAMILY_V4, SourceKey};

use crate::{
    clock::coarse_ns,
    maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6},
    refused::{ACL_REFUSAL_NS, Kind, Slot},
};

/// `Some(until)` when the source may not reach the VIP: refused while the coarse clock is
/// below `until`.
#[inline(always)]
pub fn denied(src: &SourceKey, cfg: &Config) -> Option<u64> {
    let v4 = src.family == FAMILY_V4;
    let lists = if v4 {
        cfg.deny_v4 | cfg.allow_v4
    } else {
        cfg.deny_v6 | cfg.allow_v6
    };
    if lists == 0 {
        return None;
    }
    let coarse = coarse_ns();
    let mut slot = Slot::of(src);
    if let Some(until) = slot.refusal(Kind::Acl, coarse) {
        return Some(until);
    }
    let denied = if v4 {
        let key = Key::new(32, src.addr_words()[0].to_ne_bytes());
        (cfg.deny_v4 != 0 && DENY_V4.get(&key).is_some())
            || (cfg.allow_v4 != 0 && ALLOW_V4.get(&key).is_none())
    } else {
        let key = Key::new(128, lb_common::words_addr(src.addr_words()));
        (cfg.deny_v6 != 0 && DENY_V6.get(&key).is_some())
            || (cfg.allow_v6 != 0 && ALLOW_V6.get(&key).is_none())
    };
    if !denied {
        return None;
    }
    let until = coarse + ACL_REFUSAL_NS;
    slot.record(src, Kind::Acl, until);
    Some(until)
}
