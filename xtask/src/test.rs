//! `cargo xtask test` (the project's one test command, what CI runs) and `cargo xtask lint`.
use anyhow::Result;

use crate::{
    cmd::{self, step},
    ebpf, setup,
};

/// Setup if needed, the eBPF object, lints, then `cargo test` of the host crates with `extra`.
pub fn test(extra: &[String]) -> Result<()> {
    setup::ensure()?;
    ebpf::build_ebpf(true)?;
    lint_steps()?;
    // The end-to-end tests run the real `ebpf-lb` binary of another package, which
    // `cargo test` alone does not build.
    step(
        "cargo build --bins (binaries the end-to-end tests run)",
        || {
            cmd::run(
                cmd::new("cargo")
                    .args(["build", "--bins"])
                    .current_dir(cmd::workspace_root()),
            )
        },
    )?;
    step("cargo test (host crates)", || {
        // No --workspace: lb-ebpf is not a default member and is not built for the host.
        cmd::run(
            cmd::new("cargo")
                .arg("test")
                .args(extra)
                .current_dir(cmd::workspace_root()),
        )
    })
}

/// rustfmt and both clippy runs; builds the eBPF object first if there is none, since
/// lb-userspace's build script embeds it.
pub fn lint() -> Result<()> {
    setup::ensure()?;
    if !ebpf::object_path().is_file() {
        println!("no eBPF object yet: lb-userspace cannot be checked without it");
        ebpf::build_ebpf(true)?;
    }
    lint_steps()
}

fn lint_steps() -> Result<()> {
    let root = cmd::workspace_root();
    step("rustfmt --check", || {
        cmd::run(
            cmd::new("cargo")
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(&root),
        )
    })?;
    step("clippy (host crates)", || {
        cmd::run(
            cmd::new("cargo")
                .args(["clippy", "--all-targets", "--", "-D", "warnings"])
                .current_dir(&root),
        )
    })?;
    step("clippy (lb-ebpf, nightly)", || {
        let mut clippy = cmd::nightly_cargo(&["clippy", "--release", "--target-dir"]);
        clippy
            .arg(root.join("target"))
            .args(["--", "-D", "warnings"])
            .current_dir(root.join("lb-ebpf"));
        cmd::run(&mut clippy)
    })
}
