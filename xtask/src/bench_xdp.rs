//! `cargo xtask bench xdp`: builds the eBPF object and the `xdp-bench` driver (tests crate)
//! in release, and runs it as root: ns/packet of each `lb_xdp` path from BPF_PROG_TEST_RUN
//! beside a trivial XDP_PASS program, medians of 5 runs with min and max, written to
//! target/bench/xdp.json.
use std::process::Command;

use anyhow::Result;

use crate::{
    cmd::{self, step},
    ebpf,
};

pub fn bench_xdp() -> Result<()> {
    // xdp-bench itself says so when it is not run as root (BPF_PROG_TEST_RUN needs it).
    ebpf::build_ebpf(true)?;
    let root = cmd::workspace_root();
    step("build xdp-bench (release)", || {
        cmd::run(
            cmd::new("cargo")
                .args(["build", "--release", "-p", "tests", "--bin", "xdp-bench"])
                .current_dir(&root),
        )
    })?;
    let out = root.join("target").join("bench").join("xdp.json");
    step("xdp-bench", || {
        cmd::run(
            Command::new(root.join("target/release/xdp-bench"))
                .args(["--runs", "5", "--repeat", "1000000", "--out"])
                .arg(&out)
                .current_dir(&root),
        )
    })
}
