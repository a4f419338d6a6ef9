//! Frames to a node whose route leaves by another interface (`NODE_REDIRECT`): the
//! encapsulated frame gets that interface's MAC as source (`EGRESS`) and goes out through
//! the device map `TX_PORTS` (XDP_REDIRECT), instead of back out of the arrival interface.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::{
    maps::{EGRESS, TX_PORTS},
    parse::ptr_at_mut,
};

/// The action for an encapsulated frame to `node` flagged `NODE_REDIRECT`. Without an
/// `EGRESS` entry (the daemon writes it before the flag) the frame is sent with XDP_TX.
#[inline(always)]
pub fn send(ctx: &XdpContext, node: u32) -> u32 {
    let Some(port) = EGRESS.get(node) else {
        return xdp_action::XDP_TX;
    };
    if port.ifindex == 0 {
        return xdp_action::XDP_TX;
    }
    // The source MAC in two stores (bytes 6..8 and 8..12), as `encap` writes it.
    let (Some(head), Some(tail)) = (ptr_at_mut::<u16>(ctx, 6), ptr_at_mut::<u32>(ctx, 8)) else {
        return xdp_action::XDP_DROP;
    };
    let m = &port.src_mac;
    // SAFETY: bounds checked by ptr_at_mut.
    unsafe {
        *head = u16::from_ne_bytes([m[0], m[1]]);
        *tail = u32::from_ne_bytes([m[2], m[3], m[4], m[5]]);
    }
    // The low bits of the flags are the action when `TX_PORTS` has no entry for the node.
    match TX_PORTS.redirect(node, u64::from(xdp_action::XDP_DROP)) {
        Ok(action) | Err(action) => action,
    }
}
