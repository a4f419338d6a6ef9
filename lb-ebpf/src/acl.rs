//! Source ACLs: deny and allow LPM tries per family. Deny wins; an empty allow list
//! (`Config::allow_v4/6 == 0`) allows every source; an empty deny list is not looked up.
use aya_ebpf::btf_maps::lpm_trie::Key;
use lb_common::{Config, FAMILY_V4, FlowKey, words_addr};

use crate::maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6};

/// True when the flow's source may not reach the VIP.
#[inline(always)]
pub fn denied(flow: &FlowKey, cfg: &Config) -> bool {
    if flow.family == FAMILY_V4 {
        let key = Key::new(32, flow.src_words()[0].to_ne_bytes());
        if cfg.deny_v4 != 0 && DENY_V4.get(&key).is_some() {
            return true;
        }
        cfg.allow_v4 != 0 && ALLOW_V4.get(&key).is_none()
    } else {
        let key = Key::new(128, words_addr(flow.src_words()));
        if cfg.deny_v6 != 0 && DENY_V6.get(&key).is_some() {
            return true;
        }
        cfg.allow_v6 != 0 && ALLOW_V6.get(&key).is_none()
    }
}
