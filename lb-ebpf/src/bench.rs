//! Programs for the flood benchmark (`cargo xtask bench xdp`, `xdp-flood`) and its test;
//! the daemon never attaches them.
//!
//! - `lb_xdp_tx`: the in-kernel traffic generator. Run through BPF_PROG_TEST_RUN in
//!   live-frames mode with the sending veth as `ingress_ifindex`, each XDP_TX transmits the
//!   test frame out of that veth (the kernel turns it into a redirect to the same device).
//! - `lb_xdp_drop`: a bare XDP_DROP, the ceiling every drop path is compared with.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lb_xdp_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn lb_xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
