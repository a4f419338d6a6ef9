//! `cargo xtask bench xdp`: builds the eBPF object and the `xdp-bench` and `xdp-flood`
//! drivers (tests crate) in release, and runs them as root:
//!
//! 1. `xdp-bench`: ns/packet of each `lb_xdp` path from BPF_PROG_TEST_RUN beside a trivial
//!    XDP_PASS program, medians of 5 runs with min and max -> target/bench/xdp.json.
//! 2. `xdp-flood`: drop throughput on a veth pair flooded by an in-kernel generator (bare
//!    XDP_DROP, parser + XDP_DROP, `lb_xdp` ACL and rate-limit drops, XDP_PASS + nftables
//!    drop), medians of 10 runs of 6M frames (short runs in rotating order: this VM's
//!    speed drifts over seconds) and their ratios -> target/bench/xdp-flood.json. Needs
//!    `nft`. Twice: the receiver's softirq on the generator's CPU (every case pays the
//!    generator's cost too, which pulls all ratios towards 1), then the receiver served
//!    by threaded NAPI on a CPU of its own (as a NIC's receive queue: the receive path
//!    alone sets the rate; a case faster than the generator is capped by it) ->
//!    target/bench/xdp-flood-rx.json.
use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    cmd::{self, step},
    ebpf,
};

pub fn bench_xdp() -> Result<()> {
    // The drivers themselves say so when they are not run as root.
    if cmd::find_program("nft").is_none() {
        bail!("nft is missing (the peer of the flood benchmark): run `cargo xtask setup --bench`");
    }
    ebpf::build_ebpf(true)?;
    let root = cmd::workspace_root();
    step("build xdp-bench and xdp-flood (release)", || {
        cmd::run(cmd::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "tests",
            "--bin",
            "xdp-bench",
            "--bin",
            "xdp-flood",
        ]))
    })?;
    let out = root.join("target").join("bench");
    step("xdp-bench", || {
        cmd::run(
            Command::new(root.join("target/release/xdp-bench"))
                .args(["--runs", "5", "--repeat", "1000000", "--out"])
                .arg(out.join("xdp.json"))
                .current_dir(&root),
        )
    })?;
    step("xdp-flood (generator and receiver on one CPU)", || {
        cmd::run(
            Command::new(root.join("target/release/xdp-flood"))
                .args(["--runs", "10", "--packets", "6000000", "--out"])
                .arg(out.join("xdp-flood.json"))
                .current_dir(&root),
        )
    })?;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("xdp-flood with the receiver on its own CPU: skipped (one CPU)");
        return Ok(());
    }
    step("xdp-flood (receiver on its own CPU)", || {
        cmd::run(
            Command::new(root.join("target/release/xdp-flood"))
                .args(["--runs", "10", "--packets", "6000000"])
                .args(["--cpu", "0", "--rx-cpu", "1", "--out"])
                .arg(out.join("xdp-flood-rx.json"))
                .current_dir(&root),
        )
    })
}
