//! Network namespaces made by a test or the demo, deleted when the guard drops (even when a
//! test panics). Every address used is in 198.18.0.0/15, inside these namespaces.
use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

/// Runs a command, returning its output, or an error naming the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// `ip ARGS...`, failing with a message.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args)).map(|_| ())
}

/// A named network namespace (`/run/netns/NAME`).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace, replacing a leftover one of the same name, and brings `lo` up.
    pub fn create(name: &str) -> Result<Self, String> {
        if Path::new("/run/netns").join(name).exists() {
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside this namespace. `nsenter --net` keeps the mount namespace,
    /// so /sys/fs/bpf stays visible (unlike `ip netns exec`, which remounts /sys).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        c
    }

    /// Sets a sysctl inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        run(self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")]))
        .map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth ends, and their peers with them.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with one end in each namespace, addresses them and brings them up.
/// Created directly inside the namespaces, so no name is ever taken in the root namespace.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<(), String> {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    a.ip(&["addr", "add", a_addr, "dev", a_if])?;
    b.ip(&["addr", "add", b_addr, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// True when running as root (needed for namespaces and BPF).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
