//! Host-side stub so the workspace builds on the host; the programs live in `main.rs` and
//! are compiled only for `bpfel-unknown-none` by `cargo xtask build-ebpf`.
#![no_std]
