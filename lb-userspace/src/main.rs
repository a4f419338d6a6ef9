//! The `ebpf-lb` binary: argument parsing, logging, and errors for a person (anyhow).
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use lb_userspace::{
    cli::{Cli, Command, LogFormat, ManifestArgs},
    daemon,
    dataplane::inspect,
    diagnostics::Severity,
    provider::files,
    translate::{ClassFilter, translate},
};

/// mimalloc instead of glibc's malloc: the proxy allocates per request (hyper, header maps,
/// rustls buffers). A/B on the bench VM: HTTP/1.1 keep-alive requests per CPU-second x1.03 to
/// x1.24 (medians of three runs), TLS handshakes unchanged (README "Benchmarks").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One TLS provider for every rustls user in the process (the proxy, upstream TLS and
    // the Kubernetes client); an error only means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`), with rustls held to errors unless `RUST_LOG` names it:
/// rustls warns once per handshake about what a client sent (an IP address as SNI, for
/// one), so any client could otherwise make the proxy write a log line per connection.
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let mut filter = rust_log
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    if !rust_log.is_some_and(|v| v.contains("rustls"))
        && let Ok(quiet) = "rustls=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    filter
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(daemon::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(&args),
        Command::Routes(args) => {
            let (snapshot, _) = files::load_dir(&args.manifests)?;
            let t = translate(&snapshot, &filter(&args));
            print!("{}", lb_userspace::routes::render_table(&t.routes));
            Ok(ExitCode::SUCCESS)
        }
        Command::Maps { bpffs, sample } => {
            let report = inspect::read_report(&bpffs, sample)
                .with_context(|| format!("reading pinned maps under {}", bpffs.display()))?;
            print!("{}", inspect::render_report(&report));
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("ebpf-lb {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn filter(args: &ManifestArgs) -> ClassFilter {
    ClassFilter {
        class: args.ingress_class.clone(),
        without_class: args.watch_ingress_without_class,
        namespace: args.namespace.clone(),
    }
}

/// Prints every problem; exit 1 when an object was rejected (a load error counts too).
fn check(args: &ManifestArgs) -> anyhow::Result<ExitCode> {
    let (snapshot, load_diags) = files::load_dir(&args.manifests)?;
    let t = translate(&snapshot, &filter(args));
    let all: Vec<_> = load_diags.iter().chain(&t.diagnostics).collect();
    for d in &all {
        println!("{d}");
    }
    let errors = all.iter().filter(|d| d.severity == Severity::Error).count();
    println!(
        "{} Ingress(es) accepted, {} rejected, {errors} error(s), {} warning(s)",
        t.accepted.len(),
        t.rejected.len(),
        all.len() - errors
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rustls_is_held_to_errors_unless_named() {
        assert!(super::log_filter(None).to_string().contains("rustls=error"));
        assert!(
            super::log_filter(Some("debug"))
                .to_string()
                .contains("rustls=error")
        );
        let named = super::log_filter(Some("info,rustls=debug")).to_string();
        assert!(
            named.contains("rustls=debug") && !named.contains("rustls=error"),
            "{named}"
        );
    }
}
