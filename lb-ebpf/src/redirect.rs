//! Frames to a node whose route leaves by another interface (`NODE_REDIRECT`): the
//! encapsulated frame gets that interface's MAC as source (`EGRESS`) and goes out through
//! the device map `TX_PORTS` (XDP_REDIRECT), instead of back out of the arrival interface.
//! An 802.1Q tag the frame arrived with belongs to the arrival interface's network: it is
//! removed, the frame leaves the other interface untagged.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};

use crate::{
    maps::{EGRESS, TX_PORTS},
    parse::{ptr_at, ptr_at_mut},
};

/// The action for an encapsulated frame to `node` flagged `NODE_REDIRECT` (`tagged`: it
/// carries one 802.1Q tag). Without an `EGRESS` entry (the daemon writes it before the
/// flag) the frame is sent with XDP_TX, unchanged.
#[inline(always)]
pub fn send(ctx: &XdpContext, node: u32, tagged: bool) -> u32 {
    let Some(port) = EGRESS.get(node) else {
        return xdp_action::XDP_TX;
    };
    if port.ifindex == 0 {
        return xdp_action::XDP_TX;
    }
    if tagged && untag(ctx).is_none() {
        return xdp_action::XDP_DROP;
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

/// Removes the 802.1Q tag after the MAC addresses: the destination MAC moves 4 bytes
/// forward and the head shrinks by 4 (the source MAC is written afterwards anyway).
#[inline(always)]
fn untag(ctx: &XdpContext) -> Option<()> {
    let (head, tail) = (ptr_at::<u32>(ctx, 0)?, ptr_at::<u16>(ctx, 4)?);
    // SAFETY: bounds checked by ptr_at.
    let (head, tail) = unsafe { (*head, *tail) };
    // SAFETY: ctx.ctx is the live xdp_md of this invocation.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, 4) } != 0 {
        return None;
    }
    let (h, t) = (ptr_at_mut::<u32>(ctx, 0)?, ptr_at_mut::<u16>(ctx, 4)?);
    // SAFETY: bounds checked by ptr_at_mut.
    unsafe {
        *h = head;
        *t = tail;
    }
    Some(())
}
