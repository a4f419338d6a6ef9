//! `cargo xtask build-ebpf`: builds lb-ebpf with nightly for bpfel-unknown-none and copies
//! the object to target/ebpf/lb-ebpf.o, where lb-userspace/build.rs embeds it from.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::{
    cmd::{self, step},
    setup,
};

/// The target lb-ebpf/.cargo/config.toml builds for.
const TARGET: &str = "bpfel-unknown-none";

/// Where the object is copied to (relative to the workspace root).
pub fn object_path() -> PathBuf {
    cmd::workspace_root()
        .join("target")
        .join("ebpf")
        .join("lb-ebpf.o")
}

pub fn build_ebpf(release: bool) -> Result<()> {
    setup::ensure()?;
    let root = cmd::workspace_root();
    let target_dir = root.join("target");
    let profile = if release { "release" } else { "debug" };
    step(
        &format!("build lb-ebpf ({profile}, nightly, {TARGET})"),
        || {
            // Run inside lb-ebpf/ so its .cargo/config.toml (target, build-std, BTF flags,
            // optimised dev profile) applies.
            let mut build = cmd::nightly_cargo(&["build"]);
            if release {
                build.arg("--release");
            }
            build
                .arg("--target-dir")
                .arg(&target_dir)
                .current_dir(root.join("lb-ebpf"));
            cmd::run(&mut build)
        },
    )?;
    let built = target_dir.join(TARGET).join(profile).join("lb-ebpf");
    install_object(&built)
}

/// Copies `built` to [`object_path`] unless it is already there byte for byte: a new mtime
/// would make cargo rebuild lb-userspace for nothing.
fn install_object(built: &PathBuf) -> Result<()> {
    let dest = object_path();
    let bytes = fs::read(built).with_context(|| format!("cannot read {}", built.display()))?;
    if fs::read(&dest).is_ok_and(|old| old == bytes) {
        println!("{} is up to date ({} bytes)", dest.display(), bytes.len());
        return Ok(());
    }
    let dir = dest.parent().unwrap_or(&dest);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Written beside it and renamed, so a concurrent build never embeds half a file.
    let tmp = dest.with_extension("o.tmp");
    fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &dest).with_context(|| format!("cannot rename to {}", dest.display()))?;
    println!(
        "copied {} -> {} ({} bytes)",
        built.display(),
        dest.display(),
        bytes.len()
    );
    Ok(())
}

/// `cargo build --release` of the daemon and the test binaries (demo and benchmarks).
pub fn build_release_binaries() -> Result<()> {
    let root = cmd::workspace_root();
    cmd::step("build release binaries", || {
        cmd::run(
            cmd::new("cargo")
                .args([
                    "build",
                    "--release",
                    "-p",
                    "lb-userspace",
                    "-p",
                    "tests",
                    "--bins",
                ])
                .current_dir(&root),
        )
    })
}
