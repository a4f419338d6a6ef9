//! `lb_xdp`: the entry point on the node NIC.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::Reason;

use crate::{maps::VIPS, parse, stats};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    try_lb_xdp(&ctx)
}

#[inline(always)]
fn try_lb_xdp(ctx: &XdpContext) -> u32 {
    let Some(pkt) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(vip) = VIPS.get_ptr(pkt.dst) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: VIPS values are only replaced whole by userspace; we copy the id out at once.
    let vip_id = unsafe { (*vip).id };
    let len = (ctx.data_end() - ctx.data()) as u64;
    stats::count(vip_id, Reason::PassLocal, len);
    xdp_action::XDP_PASS
}
