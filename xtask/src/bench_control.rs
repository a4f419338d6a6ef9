//! `cargo xtask bench control`: translation and publish time and memory at 1k and 10k
//! Ingresses (beside `nginx -t` of an equivalent configuration), manifest change to traffic,
//! and failed requests during continuous change. The measuring is done by the tests crate's
//! `bench-control` binary; this builds and runs it.
use anyhow::Result;

use crate::{
    cmd::{self, step},
    ebpf, setup,
};

pub fn run() -> Result<()> {
    setup::ensure()?;
    ebpf::build_ebpf(true)?;
    let root = cmd::workspace_root();
    ebpf::build_release_binaries()?;
    let bin = root.join("target/release/bench-control");
    step("bench-control", || {
        cmd::run(
            cmd::new(&bin.to_string_lossy())
                .args(["--ebpf-lb", "target/release/ebpf-lb"])
                .args(["--backend", "target/release/echo-backend"])
                .args(["--out", "target/bench/control.json"])
                .current_dir(&root),
        )
    })
}
