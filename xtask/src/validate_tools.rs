//! The Python tool the deploy checks need (tests/tests/deploy_manifests.rs): kubernetes-validate
//! and its dependencies, pinned in deploy/validate-requirements.txt, in a project-local venv
//! (target/venv) so nothing is installed into the system Python. Idempotent: a stamp file
//! holding the requirements it was built from says whether the venv is current.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::cmd;

fn venv() -> PathBuf {
    cmd::workspace_root().join("target/venv")
}

fn requirements() -> PathBuf {
    cmd::workspace_root().join("deploy/validate-requirements.txt")
}

fn stamp() -> PathBuf {
    venv().join("ebpf-lb-requirements.txt")
}

/// Whether the venv is missing or was built from other requirements.
pub fn venv_missing() -> bool {
    let built = fs::read_to_string(stamp()).ok();
    let wanted = fs::read_to_string(requirements()).ok();
    !venv().join("bin/kubernetes-validate").is_file() || built.is_none() || built != wanted
}

/// Creates or refreshes target/venv with the pinned requirements.
pub fn ensure_venv() -> Result<()> {
    if !venv_missing() {
        println!("found: {} (kubernetes-validate)", venv().display());
        return Ok(());
    }
    let venv = venv();
    if !venv.join("bin/pip").is_file() {
        // Debian's python3 needs python3-venv for this (in setup's package list).
        cmd::run(cmd::new("python3").args(["-m", "venv"]).arg(&venv)).with_context(|| {
            format!(
                "could not create {}: install python3-venv (apt-get install python3-venv)",
                venv.display()
            )
        })?;
    }
    cmd::run(
        cmd::new(
            venv.join("bin/pip")
                .to_str()
                .context("venv path is not UTF-8")?,
        )
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements()),
    )
    .context("could not install deploy/validate-requirements.txt from PyPI")?;
    fs::copy(requirements(), stamp()).context("writing the venv's stamp")?;
    println!("installed: kubernetes-validate in {}", venv.display());
    Ok(())
}
