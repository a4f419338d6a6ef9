//! The eBPF object (`lb-ebpf`), embedded at build time. See `build.rs`.

/// Bytes of the lb-ebpf ELF object, aligned as aya requires.
pub fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(env!("LB_EBPF_OBJECT_PATH"))
}
