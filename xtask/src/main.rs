//! `cargo xtask`: the project's developer commands (alias in .cargo/config.toml).
mod bench_control;
mod bench_l7;
mod bench_xdp;
mod cmd;
mod demo;
mod ebpf;
mod setup;
mod test;
mod toolchain;
mod validate_tools;

use std::{process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer commands of ebpf-lb")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, nightly + rust-src, bpf-linker), mount bpffs.
    Setup {
        /// Also install the benchmark tools (nginx, wrk, nftables).
        #[arg(long)]
        bench: bool,
    },
    /// Build the XDP/TC programs and copy the object to target/ebpf/lb-ebpf.o.
    BuildEbpf {
        /// Release profile (the dev profile of lb-ebpf is optimised too).
        #[arg(long)]
        release: bool,
    },
    /// Everything CI checks: setup, build-ebpf, rustfmt, clippy, cargo test.
    Test {
        /// Passed on to `cargo test` (e.g. `cargo xtask test -- maglev -- --nocapture`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// rustfmt --check and clippy on the host crates and on lb-ebpf.
    Lint,
    /// Benchmarks against peers measured in the same run; JSON under target/bench/.
    Bench {
        /// Which benchmark: l7, xdp, control, or all.
        #[arg(default_value = "l7")]
        which: String,
    },
    /// Build in release and run the demo (lb-demo) over network namespaces.
    Demo {
        /// Passed on to lb-demo.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let start = Instant::now();
    let result = match &cli.command {
        Command::Setup { bench } => setup::setup(*bench),
        Command::BuildEbpf { release } => ebpf::build_ebpf(*release),
        Command::Test { args } => test::test(args),
        Command::Lint => test::lint(),
        Command::Bench { which } => match which.as_str() {
            "l7" => bench_l7::run(),
            "xdp" => bench_xdp::bench_xdp(),
            "control" => bench_control::run(),
            "all" => bench_xdp::bench_xdp()
                .and_then(|()| bench_control::run())
                .and_then(|()| bench_l7::run()),
            other => Err(anyhow::anyhow!(
                "unknown benchmark {other:?} (l7, xdp, control, all)"
            )),
        },
        Command::Demo { args } => demo::demo(args, || start.elapsed()),
    };
    cmd::print_summary(start.elapsed());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn args_after_double_dash_pass_through_verbatim() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "maglev", "--", "--nocapture"]);
        let Ok(Cli {
            command: Command::Test { args },
        }) = cli
        else {
            panic!("`test -- ...` did not parse as test with args");
        };
        assert_eq!(args, ["maglev", "--", "--nocapture"]);
        let cli = Cli::try_parse_from(["xtask", "demo", "--", "--keep"]);
        assert!(matches!(cli, Ok(Cli { command: Command::Demo { args } }) if args == ["--keep"]));
    }
}
