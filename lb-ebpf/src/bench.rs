//! Programs for the benchmarks (`cargo xtask bench xdp`: `xdp-bench`, `xdp-flood`) and
//! their tests; the daemon never attaches them.
//!
//! - `lb_xdp_tx`: the in-kernel traffic generator. Run through BPF_PROG_TEST_RUN in
//!   live-frames mode with the sending veth as `ingress_ifindex`, each XDP_TX transmits the
//!   test frame out of that veth (the kernel turns it into a redirect to the same device).
//! - `lb_xdp_drop`: a bare XDP_DROP, the ceiling every drop path is compared with.
//! - `lb_xdp_parse_drop`: `lb_xdp`'s header parser, then XDP_DROP for TCP/UDP: the floor
//!   of any drop decision taken on the headers (what reading the frame costs), between
//!   the bare drop and `lb_xdp`'s drop paths.
//! - `lb_xdp_restore`: `lb_xdp`, then the frame put back as it came in. BPF_PROG_TEST_RUN's
//!   repeat mode runs a program again and again on the same frame without restoring it, so
//!   only this way can the encapsulating path be timed over many runs: every run sees the
//!   original frame. The restore (one helper call, 14 bytes written) is part of the time.
use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext,
};

use crate::parse::{ETH_HLEN, ptr_at, ptr_at_mut};

#[xdp]
pub fn lb_xdp_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn lb_xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn lb_xdp_parse_drop(ctx: XdpContext) -> u32 {
    match crate::parse::parse(&ctx) {
        Some(pkt) if matches!(pkt.kind, crate::parse::Kind::L4) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

xdp_program!(lb_xdp_restore => restore);

#[inline(always)]
fn restore(ctx: &XdpContext) -> u32 {
    // Frames without a VLAN tag only: what the benchmark sends.
    let Some(eth) = ptr_at::<[u8; ETH_HLEN]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: bounds checked by ptr_at.
    let saved = unsafe { *eth };
    let action = crate::xdp::run(ctx);
    if action != xdp_action::XDP_TX && action != xdp_action::XDP_REDIRECT {
        return action;
    }
    // What an encapsulation added: an outer IPv4 header carrying IPIP (protocol 4), or an
    // outer IPv6 header carrying IPv6 (next header 41).
    let Some(l3) = ptr_at::<[u8; 24]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: bounds checked by ptr_at.
    let (ethertype, v4_proto, v6_next) = unsafe { ([(*l3)[12], (*l3)[13]], (*l3)[23], (*l3)[20]) };
    let grown = match (ethertype, v4_proto, v6_next) {
        ([0x08, 0x00], 4, _) => 20,
        ([0x86, 0xdd], _, 41) => 40,
        _ => 0,
    };
    if grown != 0 {
        // SAFETY: ctx.ctx is this invocation's context; shrinking by what lb_xdp grew.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, grown) } != 0 {
            return xdp_action::XDP_ABORTED;
        }
        let Some(eth) = ptr_at_mut::<[u8; ETH_HLEN]>(ctx, 0) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: bounds checked by ptr_at_mut.
        unsafe { *eth = saved };
    }
    action
}
