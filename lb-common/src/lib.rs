//! Types shared by the kernel programs (`lb-ebpf`) and the daemon (`lb-userspace`).
//!
//! Every type that crosses the kernel/user boundary is written once here, `#[repr(C)]`,
//! without implicit padding (explicit `_pad` fields, `u32` flags instead of `bool`), and its
//! size is asserted at compile time so both sides can never disagree silently.
#![no_std]

pub mod flow;
pub mod maps;
pub mod policy;
pub mod stats;
pub mod vip;

pub use flow::*;
pub use maps::*;
pub use policy::*;
pub use stats::*;
pub use vip::*;
