//! `cargo xtask setup`: installs only what is missing — Debian packages here, the nightly
//! toolchain and bpf-linker in [`toolchain`] — and mounts bpffs. [`setup_needed`] is the
//! cheap check other commands use to run it on their own.
use std::{fs, process::Stdio};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, step},
    toolchain, validate_tools,
};

/// A Debian package, or alternatives of which any one will do (the first apt knows is
/// installed).
type Package = &'static [&'static str];

/// What the tests and the demo need from Debian.
const PACKAGES: &[Package] = &[
    // bpftool: inspect programs, links and pinned maps (`bpftool prog show`, `map dump pinned`).
    &["bpftool"],
    // iproute2: `ip netns` / `ip link` to build the veth + namespace test topologies.
    &["iproute2"],
    // curl: a real HTTP client for the namespace tests and the demo.
    &["curl"],
    // util-linux: `nsenter --net=...` (unlike `ip netns exec` it keeps /sys/fs/bpf visible).
    &["util-linux"],
    // procps: `ps`, `pgrep`, `sysctl` for the tests and the demo.
    &["procps"],
    // kubectl: `kubectl kustomize` renders the deploy/ overlays in the deploy tests. Debian's
    // kubernetes-client (1.20, kustomize v2.0: deploy/ keeps to that syntax); a kubectl
    // already installed from another package does as well.
    &["kubernetes-client", "kubectl"],
    // python3-venv: the project-local venv (target/venv) holding kubernetes-validate.
    &["python3-venv"],
    // gcc: the C compiler the cc crate builds ring's and mimalloc's C sources with, and the
    // linker rustc calls.
    &["gcc"],
];

/// What `setup --bench` adds for `cargo xtask bench`.
const BENCH_PACKAGES: &[Package] = &[
    // nginx: the L7 peer every proxy figure is a ratio against (nginx-light is enough).
    &["nginx-light", "nginx"],
    // wrk: closed-loop HTTP load generator.
    &["wrk"],
    // nftables: `nft`, the peer of the XDP flood benchmark (a drop rule at prerouting -300).
    &["nftables"],
    // nghttp2-client: h2load, the HTTP/2 load generator of `bench l7`.
    &["nghttp2-client"],
];

/// Where the kernel's BPF filesystem is mounted; programs and maps are pinned below it.
const BPFFS: &str = "/sys/fs/bpf";

/// Installs what is missing and reports what it found; fails naming everything it could not do.
pub fn setup(bench: bool) -> Result<()> {
    if !is_root() {
        eprintln!(
            "warning: not running as root: installing packages and mounting bpffs will fail; \
             run `sudo -E cargo xtask setup` if they are missing"
        );
    }
    let mut failures = Vec::new();
    let mut record = |r: Result<()>| {
        if let Err(e) = r {
            let causes: Vec<String> = e
                .chain()
                .skip(1)
                .map(|c| format!("\n      ({c})"))
                .collect();
            failures.push(format!("{e}{}", causes.concat()));
        }
    };
    record(step("Debian packages", || packages(bench)));
    record(step("nightly toolchain", toolchain::nightly));
    record(step("bpf-linker", toolchain::bpf_linker));
    record(step("bpffs", bpffs));
    record(step(
        "kubernetes-validate venv",
        validate_tools::ensure_venv,
    ));
    if !failures.is_empty() {
        bail!("setup could not finish:\n  - {}", failures.join("\n  - "));
    }
    Ok(())
}

/// Runs [`setup`] when [`setup_needed`] says something is missing.
pub fn ensure() -> Result<()> {
    if !setup_needed() {
        return Ok(());
    }
    println!("setup needed: {}", missing().join(", "));
    step("setup", || setup(false))
}

/// Whether anything [`setup`] (without `--bench`) provides is missing. Cheap: a few queries.
pub fn setup_needed() -> bool {
    !missing().is_empty()
}

/// What is missing, one phrase each.
fn missing() -> Vec<String> {
    let mut missing: Vec<String> = match missing_packages(PACKAGES) {
        Ok(pkgs) => pkgs.iter().map(|p| format!("package {}", p[0])).collect(),
        Err(_) => vec!["Debian packages (dpkg-query failed)".into()],
    };
    match toolchain::missing_components() {
        Ok(c) if c.is_empty() => {}
        Ok(c) => missing.push(format!("nightly {}", c.join(", "))),
        Err(_) => missing.push("nightly toolchain".into()),
    }
    if toolchain::bpf_linker_version().is_err() {
        missing.push("bpf-linker".into());
    }
    if !bpffs_mounted() {
        missing.push(format!("bpffs at {BPFFS}"));
    }
    if validate_tools::venv_missing() {
        missing.push("target/venv with kubernetes-validate".into());
    }
    missing
}

fn is_root() -> bool {
    // The effective uid is the second number on the `Uid:` line.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The packages of `wanted` none of whose alternatives is installed.
fn missing_packages(wanted: &[Package]) -> Result<Vec<Package>> {
    let mut query = cmd::new("dpkg-query");
    query.args(["-W", "-f", "${Package} ${Status}\n"]);
    query.args(wanted.iter().copied().flatten());
    // dpkg-query exits 1 when it knows nothing of a name, yet lists the others.
    let out = cmd::output(&mut query).context(
        "this setup needs dpkg (Debian or Ubuntu); elsewhere install the packages by hand",
    )?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter(|l| l.ends_with(" installed") && !l.contains("not-installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| !p.iter().any(|n| installed.contains(n)))
        .copied()
        .collect())
}

fn packages(bench: bool) -> Result<()> {
    let mut wanted: Vec<Package> = PACKAGES.to_vec();
    if bench {
        wanted.extend(BENCH_PACKAGES);
    }
    let missing = missing_packages(&wanted)?;
    let names = |ps: &[Package]| ps.iter().map(|p| p.join("|")).collect::<Vec<_>>();
    let found: Vec<Package> = wanted
        .iter()
        .copied()
        .filter(|p| !missing.contains(p))
        .collect();
    if !found.is_empty() {
        println!("found: {}", names(&found).join(", "));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let todo = names(&missing).join(", ");
    let fix = "install them by hand with apt-get, or run `cargo xtask setup` as root";
    // Only now is the package list worth refreshing: a fresh machine may have none.
    cmd::run(cmd::new("apt-get").arg("update").stdin(Stdio::null()))
        .with_context(|| format!("could not install {todo}: apt-get update failed; {fix}"))?;
    let chosen: Vec<&str> = missing
        .iter()
        .map(|p| available(p).unwrap_or(p[0]))
        .collect();
    let mut install = cmd::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&chosen)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd::run(&mut install).with_context(|| format!("could not install {todo}; {fix}"))?;
    println!("installed: {}", chosen.join(", "));
    Ok(())
}

/// The first of `names` that apt knows (after `apt-get update`).
fn available(names: Package) -> Option<&'static str> {
    names.iter().copied().find(|n| {
        cmd::capture(cmd::new("apt-cache").args(["show", "--no-all-versions", n]))
            .is_ok_and(|out| !out.trim().is_empty())
    })
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            (f.next(), f.next()) == (Some(BPFFS), Some("bpf"))
        })
    })
}

fn bpffs() -> Result<()> {
    if bpffs_mounted() {
        println!("found: bpffs at {BPFFS}");
        return Ok(());
    }
    cmd::run(cmd::new("mount").args(["-t", "bpf", "bpf", BPFFS])).with_context(|| {
        format!("could not mount bpffs at {BPFFS}; as root run `mount -t bpf bpf {BPFFS}`")
    })?;
    println!("mounted: bpffs at {BPFFS}");
    Ok(())
}
