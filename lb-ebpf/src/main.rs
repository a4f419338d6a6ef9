//! ebpf-lb kernel programs.
//!
//! - `lb_xdp` (XDP, node NIC): parse, police (ACL, penalty box, rate limits), steer each
//!   VIP flow to the node Maglev gives it (pass locally, or IPIP/IP6IP6 + XDP_TX, or
//!   XDP_REDIRECT when the route to that node leaves by another interface), count.
//! - `lb_tc_decap` (TC ingress, node NIC): strip the outer header of steered packets
//!   addressed to this node.
//! - `lb_xdp_pass`: XDP_PASS, the benchmark baseline and a test-topology helper.
//! - `lb_xdp_tx`, `lb_xdp_drop` (`bench`): the flood benchmark's in-kernel generator and its
//!   bare XDP_DROP ceiling; never attached by the daemon.
//!
//! Files by job, Katran style: `parse` (bounds-checked header walking and the policy for
//! fragments, options, extension headers and ICMP), `maps` (every map with a one-line
//! comment), `vips` (which VIP a packet is for), `acl`, `ratelimit` (penalty box and token
//! buckets), `refused` (per-CPU cache of refused sources), `last_drop` (per CPU, the last drop
//! verdict, which answers the rest of a flood right after parsing), `steer` (flow table and Maglev),
//! `flow_cache` (per-CPU copy of established TCP flows in front of `FLOWS`), `syncookie`
//! (SYN-ACKs carrying SYN cookies above the SYN-rate threshold, and the check of the ACKs
//! that return them), `encap` + `csum` (outer headers), `redirect` (frames out of another interface), `decap`, `stats` (counter updates),
//! `clock` (cheap tick time), `xdp` (the order of it all), `entry` (entry points without
//! a BPF-to-BPF call).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
#[macro_use]
mod entry;

#[cfg(target_arch = "bpf")]
mod acl;
#[cfg(target_arch = "bpf")]
mod bench;
#[cfg(target_arch = "bpf")]
mod clock;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod decap;
#[cfg(target_arch = "bpf")]
mod encap;
#[cfg(target_arch = "bpf")]
mod flow_cache;
#[cfg(target_arch = "bpf")]
mod last_drop;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod ratelimit;
#[cfg(target_arch = "bpf")]
mod redirect;
#[cfg(target_arch = "bpf")]
mod refused;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod steer;
#[cfg(target_arch = "bpf")]
mod syncookie;
#[cfg(target_arch = "bpf")]
mod vips;
#[cfg(target_arch = "bpf")]
mod xdp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves there are no panics; this is never reached.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("lb-ebpf is an eBPF object: build it with `cargo xtask build-ebpf`");
}
