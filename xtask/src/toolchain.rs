//! The Rust side of setup: the nightly toolchain with its components, and bpf-linker built
//! against nightly's own LLVM.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// Components of the nightly toolchain: rust-src for `-Z build-std=core` (the bpfel target has
/// no prebuilt core), clippy for `cargo xtask lint` on lb-ebpf.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// Which of [`NIGHTLY_COMPONENTS`] the nightly toolchain lacks; fails if there is no nightly.
pub fn missing_components() -> Result<Vec<&'static str>> {
    let toolchains = cmd::capture(cmd::new("rustup").args(["toolchain", "list"]))?;
    let has_nightly = toolchains
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| t == "nightly" || t.starts_with("nightly-"));
    if !has_nightly {
        bail!("no nightly toolchain");
    }
    let installed =
        cmd::capture(cmd::new("rustup").args(["+nightly", "component", "list", "--installed"]))?;
    Ok(NIGHTLY_COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l == *c || l.starts_with(&format!("{c}-")))
        })
        .collect())
}

pub fn nightly() -> Result<()> {
    let missing = match missing_components() {
        Ok(missing) => {
            println!("found: nightly toolchain");
            missing
        }
        Err(_) => {
            cmd::run(cmd::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))
            .context(
                "could not install the nightly toolchain; make sure rustup is installed and \
                     on PATH, then run `rustup toolchain install nightly --profile minimal`",
            )?;
            missing_components()?
        }
    };
    for c in NIGHTLY_COMPONENTS.iter().filter(|c| !missing.contains(c)) {
        println!("found: nightly {c}");
    }
    for c in missing {
        cmd::run(cmd::new("rustup").args(["component", "add", c, "--toolchain", "nightly"]))
            .with_context(|| {
                format!("could not add {c}; run `rustup component add {c} --toolchain nightly`")
            })?;
    }
    Ok(())
}

/// `bpf-linker --version`, from PATH or the cargo bin directory.
pub fn bpf_linker_version() -> Result<String> {
    let out = cmd::capture(cmd::new("bpf-linker").arg("--version"))?;
    Ok(out.trim().to_owned())
}

/// Builds bpf-linker unless it runs already.
pub fn bpf_linker() -> Result<()> {
    if let Ok(version) = bpf_linker_version() {
        let at = cmd::find_program("bpf-linker").unwrap_or_default();
        println!("found: {version} ({})", at.display());
        return Ok(());
    }
    let fail = "could not build bpf-linker";
    let fix = "fix the error above and run `cargo xtask setup` again";
    let sysroot = cmd::capture(cmd::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .with_context(|| format!("{fail}: no nightly rustc; {fix}"))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let version = cmd::capture(cmd::new("rustc").args(["+nightly", "-vV"]))
        .with_context(|| format!("{fail}; {fix}"))?;
    let major = llvm_major(&version)
        .ok_or_else(|| anyhow!("{fail}: `rustc +nightly -vV` names no LLVM version; {fix}"))?;
    let files: Vec<String> = fs::read_dir(&lib)
        .with_context(|| format!("{fail}: cannot read {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let link_name = llvm_link_name(&files, major).ok_or_else(|| {
        anyhow!(
            "{fail}: no libLLVM-{major}-rust-*.so in {}; {fix}",
            lib.display()
        )
    })?;
    let lib = lib.display();
    let mut install = cmd::nightly_cargo(&["install", "bpf-linker", "--no-default-features"]);
    install
        .args(["--features", &format!("llvm-{major},no-llvm-linking")])
        .env(
            "RUSTFLAGS",
            format!("-L {lib} -l dylib={link_name} -C link-arg=-Wl,-rpath,{lib}"),
        );
    println!("building bpf-linker against nightly's own LLVM {major} (takes a few minutes)");
    cmd::run(&mut install).with_context(|| format!("{fail}; {fix}"))?;
    println!("installed: {}", bpf_linker_version()?);
    Ok(())
}

/// `22` from the `LLVM version: 22.1.4` line of `rustc -vV`.
fn llvm_major(rustc_vv: &str) -> Option<&str> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// The `-l dylib=` name of the LLVM that ships with rustc: `libLLVM-22-rust-1.97.0-nightly.so`
/// gives `LLVM-22-rust-1.97.0-nightly`. Linking bpf-linker against it (feature
/// `no-llvm-linking`) means no system LLVM of the same version is needed.
fn llvm_link_name(lib_files: &[String], major: &str) -> Option<String> {
    let prefix = format!("libLLVM-{major}-rust-");
    lib_files
        .iter()
        .filter(|f| f.starts_with(&prefix))
        .find_map(|f| f.strip_prefix("lib")?.strip_suffix(".so"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv), Some("22"));
        assert_eq!(llvm_major("release: 1.97.0\n"), None);
        assert_eq!(llvm_major("LLVM version: \n"), None);
    }

    #[test]
    fn llvm_link_name_from_sysroot_lib() {
        let files: Vec<String> = [
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "libLLVM-22-rust-1.97.0-nightly.so",
            "rustlib",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            llvm_link_name(&files, "22").as_deref(),
            Some("LLVM-22-rust-1.97.0-nightly")
        );
        assert_eq!(llvm_link_name(&files, "21"), None);
    }
}
