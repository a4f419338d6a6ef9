//! `cargo xtask demo`: builds everything in release and hands over to `lb-demo` (from the
//! tests crate), which builds the namespaces, starts the daemon and the backends, and cleans up.
use std::{os::unix::process::CommandExt as _, process::Command, time::Duration};

use anyhow::{Result, bail};

use crate::{cmd, ebpf, setup};

pub fn demo(extra: &[String], elapsed: impl Fn() -> Duration) -> Result<()> {
    setup::ensure()?;
    ebpf::build_ebpf(true)?;
    let root = cmd::workspace_root();
    ebpf::build_release_binaries()?;
    let demo = "target/release/lb-demo";
    if !root.join(demo).is_file() {
        bail!("{demo} was not built: the tests crate has no lb-demo binary yet");
    }
    let mut run = Command::new(root.join(demo));
    run.args(["--ebpf-lb", "target/release/ebpf-lb"])
        .args(["--backend", "target/release/echo-backend"])
        .args(["--manifests", "examples/demo"])
        .args(extra)
        .current_dir(&root);
    cmd::print_summary(elapsed());
    println!("$ {}", cmd::display(&run));
    // exec: the demo takes over this process, so Ctrl-C reaches it directly and its exit
    // code is ours. exec returns only when it could not start.
    let err = run.exec();
    bail!("could not start {demo}: {err}")
}
