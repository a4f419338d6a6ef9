//! `xdp_program!`: an XDP entry point whose body is inlined into it.
//!
//! aya's `#[xdp]` wraps the body in an inner function; when the body is large (as
//! `lb_xdp`'s is), LLVM keeps that as a BPF-to-BPF call, and the call with its stack frame
//! cost 8 ns of a 46 ns ACL drop (BPF_PROG_TEST_RUN, this VM). Small programs are inlined
//! either way and keep the attribute.

/// `xdp_program!(name => body)`: `pub fn name` in section `xdp` running `body(&XdpContext)`,
/// which must be `#[inline(always)]`.
macro_rules! xdp_program {
    ($(#[$attr:meta])* $name:ident => $body:path) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        #[unsafe(link_section = "xdp")]
        pub fn $name(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
            $body(&aya_ebpf::programs::XdpContext::new(ctx))
        }
    };
}
