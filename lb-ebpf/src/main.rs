//! ebpf-lb kernel programs.
//!
//! - `lb_xdp` (XDP, node NIC): parse, classify VIP traffic, count it, pass it on.
//!
//! Files by job, Katran style: `parse` (bounds-checked header walking), `maps` (every map
//! with a one-line comment), `stats` (counter updates).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod stats;
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
