//! Running commands and timing steps: every command is printed before it runs, every step
//! prints its name when it starts and how long it took when it ends.
use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// One step for the summary: nesting depth, name, and (time, succeeded) once it ended.
type StepRecord = (usize, String, Option<(Duration, bool)>);
/// Every step started so far, in order, for the summary at the end.
static STEPS: Mutex<Vec<StepRecord>> = Mutex::new(Vec::new());
/// How many steps are running inside each other right now.
static DEPTH: AtomicUsize = AtomicUsize::new(0);

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.join(".."), Path::to_path_buf)
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where rustup and `cargo install` put binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `$PATH` with the cargo bin directory appended when it is missing, so that `cargo`,
/// `rustup` and `bpf-linker` are found even from a shell that never sourced ~/.cargo/env.
fn search_path() -> OsString {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.push(bin);
    }
    env::join_paths(dirs).unwrap_or(path)
}

/// Where `name` is found on the search path, if anywhere.
pub fn find_program(name: &str) -> Option<PathBuf> {
    env::split_paths(&search_path())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A command for `program`, resolved on the search path.
pub fn new(program: &str) -> Command {
    let mut cmd = Command::new(find_program(program).unwrap_or_else(|| program.into()));
    cmd.env("PATH", search_path());
    cmd
}

/// Variables that would make a nested nightly cargo use the outer (stable) compiler or flags
/// meant for the host: the outer `cargo run` sets some, a user's shell may set the others.
/// aya-build removes RUSTC and RUSTC_WORKSPACE_WRAPPER for the same reason.
const LEAKING_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTUP_TOOLCHAIN",
    "CARGO",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
];

/// `cargo +nightly <args>` without the outer toolchain's environment; any `*RUSTFLAGS`
/// (RUSTFLAGS, CARGO_ENCODED_RUSTFLAGS, CARGO_BUILD_RUSTFLAGS, ...) would also override the
/// eBPF rustflags in lb-ebpf/.cargo/config.toml, so those go too.
pub fn nightly_cargo(args: &[&str]) -> Command {
    let mut cmd = new("cargo");
    cmd.arg("+nightly").args(args);
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str()
            && (LEAKING_ENV.contains(&key) || key.ends_with("RUSTFLAGS"))
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The command as a shell line: changed variables, program, arguments, and directory.
pub fn display(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains([' ', '"', '\'', '$']) {
            format!("'{s}'")
        } else {
            s.into_owned()
        }
    };
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))))
        .collect();
    // Programs of the workspace relative to its root; others by name, as found on PATH.
    let root = workspace_root();
    let program = Path::new(cmd.get_program());
    parts.push(match program.strip_prefix(&root) {
        Ok(relative) => quote(relative.as_os_str()),
        Err(_) => program
            .file_name()
            .map_or_else(|| quote(program.as_os_str()), quote),
    });
    parts.extend(cmd.get_args().map(quote));
    let line = parts.join(" ");
    // Commands run in the workspace root unless this says otherwise.
    match cmd.get_current_dir() {
        Some(dir) if dir != root => {
            let dir = dir.strip_prefix(&root).unwrap_or(dir);
            format!("(in {}) {line}", dir.display())
        }
        _ => line,
    }
}

/// Prints and runs `cmd` with inherited output; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a query quietly and returns its whole output, whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

/// Runs a query quietly and returns its stdout; fails (with its stderr) unless it exits 0.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` as a named step: prints its start, and its duration when it ends.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let depth = DEPTH.fetch_add(1, Ordering::SeqCst);
    let indent = "  ".repeat(depth);
    println!("{indent}==> {name}");
    // Recorded when it starts, so the summary lists steps in the order they ran.
    let slot = STEPS.lock().ok().map(|mut steps| {
        steps.push((depth, name.to_owned(), None));
        steps.len() - 1
    });
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    DEPTH.fetch_sub(1, Ordering::SeqCst);
    let verdict = if result.is_ok() { "done" } else { "FAILED" };
    println!("{indent}<== {name}: {verdict} in {}", human(took));
    if let (Some(slot), Ok(mut steps)) = (slot, STEPS.lock())
        && let Some(entry) = steps.get_mut(slot)
    {
        entry.2 = Some((took, result.is_ok()));
    }
    result
}

/// Prints every step with its time and whether it failed, then the total.
pub fn print_summary(total: Duration) {
    let Ok(steps) = STEPS.lock() else { return };
    if steps.len() > 1 {
        println!("---- steps");
        let names: Vec<String> = steps
            .iter()
            .map(|(depth, name, _)| format!("{}{name}", "  ".repeat(*depth)))
            .collect();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        for (name, (_, _, end)) in names.iter().zip(steps.iter()) {
            match end {
                Some((took, true)) => println!("{name:<width$} {:>8}", human(*took)),
                Some((took, false)) => println!("{name:<width$} {:>8}  FAILED", human(*took)),
                None => println!("{name:<width$} {:>8}", "-"),
            }
        }
    }
    println!("total: {}", human(total));
}

/// `1.2s`, or `2m 31s` from a minute on.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
