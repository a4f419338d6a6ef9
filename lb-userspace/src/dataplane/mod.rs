//! Kernel side management: loading `lb-ebpf`, pinning maps, attaching programs, filling maps.
pub mod object;
