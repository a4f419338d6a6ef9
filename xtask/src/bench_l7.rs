//! `cargo xtask bench l7`: ebpf-lb against Debian's nginx, configured equivalently (one
//! worker, upstream keep-alive, access log off, the same forwarded headers), in the same
//! run, with the same pinning: each proxy on CPU 0, wrk and the backend (an nginx answering
//! `200 ok`) on CPU 1. The primary figure is requests per proxy CPU-second (utime+stime of
//! every proxy thread from /proc over the run), with RPS and latency beside it; the backend
//! is also measured directly. TLS: full handshakes (`openssl s_time -new`, one client process per
//! connection: wrk resumes the TLS session of a closed connection, so `Connection: close` through
//! wrk measures resumed handshakes, kept as their own scenario), ECDSA P-256. HTTP/2
//! over TLS with h2load (32 connections x 10 streams). Latency at fixed rates: `l7-load`
//! (tests crate), an open-loop generator that measures from each request's scheduled start
//! (latency-corrected, as oha -q), p50/p99/p99.9 at the same rates for both proxies.
//! Medians of 3 runs with min and max; JSON in target/bench/l7.json. Sequential runs move
//! +-20% with this VM's phases, so keep-alive is also measured paired: both proxies loaded
//! at once, the ratio taken over the same seconds (see [`paired_keepalive`]).
use std::{
    fmt::Write as _,
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

const RUNS: usize = 3;
const SECONDS: u32 = 5;
const BACKEND: u16 = 19001;
const NGINX_HTTP: u16 = 19002;
const NGINX_HTTPS: u16 = 19443;
const LB_HTTP: u16 = 19003;
const LB_HTTPS: u16 = 19444;
const LB_ADMIN: u16 = 19254;

/// A process stopped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Scenario {
    name: &'static str,
    target: Target,
    connections: u32,
    url: String,
    close: bool,
    /// h2load (HTTP/2 over TLS) instead of wrk.
    h2: bool,
    /// `openssl s_time -new` (a full TLS handshake per connection) instead of wrk.
    full_handshake: bool,
}

/// Fixed request rates of the latency comparison (both proxies sustain them on one core).
const RATES: [u32; 2] = [5_000, 20_000];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Backend,
    Nginx,
    EbpfLb,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Backend => "backend-direct",
            Self::Nginx => "nginx",
            Self::EbpfLb => "ebpf-lb",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    requests: f64,
    cpu_seconds: f64,
    per_cpu_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub fn run() -> Result<()> {
    for tool in ["nginx", "wrk", "h2load", "taskset", "openssl"] {
        if cmd::find_program(tool).is_none() {
            bail!("{tool} is missing: run `cargo xtask setup --bench`");
        }
    }
    let root = cmd::workspace_root();
    let work = root.join("target/bench/l7-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    cmd::step("build ebpf-lb (release)", || {
        // ebpf-lb embeds the XDP object: build it only when it is missing.
        if !crate::ebpf::object_path().is_file() {
            crate::ebpf::build_ebpf(false)?;
        }
        cmd::run(cmd::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "lb-userspace",
            "--bin",
            "ebpf-lb",
            "-p",
            "tests",
            "--bin",
            "l7-load",
        ]))
    })?;
    let ebpf_lb = root.join("target/release/ebpf-lb");
    let l7_load = root.join("target/release/l7-load");

    // One ECDSA P-256 certificate for both proxies.
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    cmd::run(
        cmd::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bench.test",
                "-addext",
                "subjectAltName=DNS:bench.test,IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()),
    )?;

    let _backend = start_nginx(&work, "backend", &backend_conf(&work), "1")?;
    wait_port(BACKEND)?;
    let nginx = start_nginx(&work, "proxy", &proxy_conf(&work, &cert, &key), "0")?;
    wait_port(NGINX_HTTP)?;
    let manifests = work.join("manifests");
    fs::create_dir_all(&manifests)?;
    fs::write(manifests.join("bench.yaml"), lb_manifests(&cert, &key)?)?;
    let lb = Proc(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(&ebpf_lb)
            .arg("run")
            .arg("--manifests")
            .arg(&manifests)
            .args(["--http-listen", &format!("127.0.0.1:{LB_HTTP}")])
            .args(["--https-listen", &format!("127.0.0.1:{LB_HTTPS}")])
            .args(["--admin-listen", &format!("127.0.0.1:{LB_ADMIN}")])
            .args([
                "--default-ssl-certificate",
                "bench/cert",
                "--proxy-workers",
                "1",
            ])
            .args(["--access-log", "off"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting ebpf-lb")?,
    );
    wait_port(LB_HTTP)?;
    let nginx_pids = with_children(nginx.0.id());
    let lb_pids = vec![lb.0.id()];

    let mut scenarios = Vec::new();
    for c in KEEPALIVE_CONNECTIONS {
        for (target, port) in [
            (Target::Backend, BACKEND),
            (Target::Nginx, NGINX_HTTP),
            (Target::EbpfLb, LB_HTTP),
        ] {
            scenarios.push(Scenario {
                name: if c == 32 {
                    "http1-keepalive-c32"
                } else {
                    "http1-keepalive-c128"
                },
                target,
                connections: c,
                url: format!("http://127.0.0.1:{port}/"),
                close: false,
                h2: false,
                full_handshake: false,
            });
        }
    }
    for (target, port) in [(Target::Nginx, NGINX_HTTPS), (Target::EbpfLb, LB_HTTPS)] {
        scenarios.push(Scenario {
            name: "tls-full-handshake-c32",
            target,
            connections: 32,
            url: format!("127.0.0.1:{port}"),
            close: true,
            h2: false,
            full_handshake: true,
        });
        scenarios.push(Scenario {
            name: "tls-resumed-handshake-c32",
            target,
            connections: 32,
            url: format!("https://127.0.0.1:{port}/"),
            close: true,
            h2: false,
            full_handshake: false,
        });
        scenarios.push(Scenario {
            name: "h2-tls-c32-m10",
            target,
            connections: 32,
            url: format!("https://127.0.0.1:{port}/"),
            close: false,
            h2: true,
            full_handshake: false,
        });
    }

    // Warm up every path once (connections, pools, caches).
    for s in &scenarios {
        load(s, 1)?;
    }
    let mut results: Vec<(usize, Vec<Sample>)> = scenarios
        .iter()
        .enumerate()
        .map(|(i, _)| (i, Vec::new()))
        .collect();
    for run in 0..RUNS {
        for (i, s) in scenarios.iter().enumerate() {
            let pids: &[u32] = match s.target {
                Target::Backend => &[],
                Target::Nginx => &nginx_pids,
                Target::EbpfLb => &lb_pids,
            };
            let before = cpu_ticks(pids);
            let mut sample = load(s, SECONDS)?;
            let ticks = cpu_ticks(pids).saturating_sub(before);
            sample.cpu_seconds = ticks as f64 / 100.0;
            sample.per_cpu_second = per_cpu_second(sample.requests, ticks);
            eprintln!(
                "run {} {:<24} {:<15} {:>9.0} rps  {:>9.0} req/cpu-s  p50 {:.2} ms  p99 {:.2} ms",
                run + 1,
                s.name,
                s.target.label(),
                sample.rps,
                sample.per_cpu_second,
                sample.p50_ms,
                sample.p99_ms
            );
            results[i].1.push(sample);
        }
    }
    let paired = paired_keepalive(&nginx_pids, &lb_pids)?;
    let latency = fixed_rate_latency(&l7_load)?;
    report(&root, &scenarios, &results, &paired, &latency)
}

/// Connection counts of the HTTP/1.1 keep-alive scenarios (sequential and paired).
const KEEPALIVE_CONNECTIONS: [u32; 2] = [32, 128];

/// Rounds of the paired keep-alive comparison.
const PAIRED_ROUNDS: usize = 5;

/// One round of [`paired_keepalive`]: requests per CPU-second of nginx and of ebpf-lb.
#[derive(Clone, Copy)]
struct Pair {
    connections: u32,
    nginx: f64,
    ebpf_lb: f64,
}

/// HTTP/1.1 keep-alive with both proxies loaded at the same time (two wrk, one per proxy,
/// on CPU 1; both proxies share CPU 0): each round's ratio compares the two over the same
/// seconds, so the machine's slow and fast phases (steal time on this VM moves sequential
/// runs by +-20%) cancel out. Both proxies run below saturation here, which costs each some
/// batching: the ratio, not the absolute figures, is the result.
fn paired_keepalive(nginx_pids: &[u32], lb_pids: &[u32]) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for connections in KEEPALIVE_CONNECTIONS {
        for _ in 0..PAIRED_ROUNDS {
            let spawn = |port: u16| {
                wrk_command(connections, SECONDS)
                    .arg(format!("http://127.0.0.1:{port}/"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting wrk")
            };
            let (n0, l0) = (cpu_ticks(nginx_pids), cpu_ticks(lb_pids));
            let to_nginx = spawn(NGINX_HTTP)?;
            let to_lb = spawn(LB_HTTP)?;
            let requests = |child: Child| -> Result<f64> {
                let out = child.wait_with_output().context("waiting for wrk")?;
                let text = String::from_utf8_lossy(&out.stdout);
                parse_wrk(&text)
                    .map(|s| s.requests)
                    .with_context(|| format!("parsing wrk output:\n{text}"))
            };
            let (rn, rl) = (requests(to_nginx)?, requests(to_lb)?);
            let (n1, l1) = (cpu_ticks(nginx_pids), cpu_ticks(lb_pids));
            let pair = Pair {
                connections,
                nginx: per_cpu_second(rn, n1.saturating_sub(n0)),
                ebpf_lb: per_cpu_second(rl, l1.saturating_sub(l0)),
            };
            eprintln!(
                "paired keep-alive c{connections}: nginx {:.0}, ebpf-lb {:.0} req/cpu-s ({:.3}x)",
                pair.nginx,
                pair.ebpf_lb,
                pair.ebpf_lb / pair.nginx
            );
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// p50/p99/p99.9 (ms) and errors of one fixed-rate run.
#[derive(Clone, Copy, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    errors: f64,
    achieved: f64,
}

/// Runs of `l7-load` per rate and proxy (even, so each proxy goes first equally often).
const LATENCY_RUNS: usize = 6;

/// The fixed-rate runs at one rate; run `i` of each proxy were taken back to back.
struct RateRuns {
    rate: u32,
    nginx: Vec<Latency>,
    lb: Vec<Latency>,
}

/// Each rate in [`RATES`]: [`LATENCY_RUNS`] runs of `l7-load` on CPU 1 against each proxy,
/// the two proxies alternating (nginx, ebpf-lb, ebpf-lb, nginx, ...), so the VM's slow and
/// fast phases fall on both alike and run `i` of one can be compared with run `i` of the
/// other.
fn fixed_rate_latency(l7_load: &Path) -> Result<Vec<RateRuns>> {
    let mut out = Vec::new();
    for rate in RATES {
        let mut nginx = Vec::new();
        let mut lb = Vec::new();
        for run in 0..LATENCY_RUNS {
            let mut order = [(Target::Nginx, NGINX_HTTP), (Target::EbpfLb, LB_HTTP)];
            if run % 2 == 1 {
                order.reverse();
            }
            for (target, port) in order {
                let l = fixed_rate_run(l7_load, port, rate)?;
                eprintln!(
                    "run {} fixed rate {rate:>6}/s {:<15} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  errors {}  achieved {:.0}/s",
                    run + 1,
                    target.label(),
                    l.p50,
                    l.p99,
                    l.p999,
                    l.errors,
                    l.achieved
                );
                match target {
                    Target::Nginx => nginx.push(l),
                    _ => lb.push(l),
                }
            }
        }
        out.push(RateRuns { rate, nginx, lb });
    }
    Ok(out)
}

/// One `l7-load` run at `rate` against `port`.
fn fixed_rate_run(l7_load: &Path, port: u16, rate: u32) -> Result<Latency> {
    let text = cmd::capture(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(l7_load)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--rate", &rate.to_string()])
            .args(["--seconds", &SECONDS.to_string(), "--connections", "32"]),
    )?;
    let f = |k: &str| json_number(&text, k).unwrap_or(f64::NAN);
    if json_number(&text, "requests").is_none() {
        bail!("l7-load printed no result: {text}");
    }
    Ok(Latency {
        p50: f("p50_ms"),
        p99: f("p99_ms"),
        p999: f("p999_ms"),
        errors: f("errors"),
        achieved: f("achieved_rps"),
    })
}

/// Run-by-run comparison of the two proxies' p99 at one rate (runs `i` of each were taken
/// back to back): the median, min and max of ebpf-lb's p99 over nginx's, and in how many
/// runs ebpf-lb's p99 was at or below nginx's.
fn paired_p99(nginx: &[Latency], lb: &[Latency]) -> Option<((f64, f64, f64), usize)> {
    let ratios: Vec<f64> = nginx.iter().zip(lb).map(|(n, l)| l.p99 / n.p99).collect();
    let at_or_below = ratios.iter().filter(|r| **r <= 1.0).count();
    Some((median_min_max(ratios)?, at_or_below))
}

fn report(
    root: &Path,
    scenarios: &[Scenario],
    results: &[(usize, Vec<Sample>)],
    paired: &[Pair],
    latency: &[RateRuns],
) -> Result<()> {
    let stat = |v: &[Sample], f: fn(&Sample) -> f64| -> (f64, f64, f64) {
        median_min_max(v.iter().map(f).collect()).unwrap_or((f64::NAN, f64::NAN, f64::NAN))
    };
    let mut json = String::from("{\n  \"runs\": 3,\n  \"seconds\": 5,\n  \"rows\": [\n");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<24} {:<15} {:>22} {:>22} {:>9} {:>9}",
        "scenario", "target", "rps med [min-max]", "req/cpu-s med [min-max]", "p50 ms", "p99 ms"
    );
    for (k, (i, samples)) in results.iter().enumerate() {
        let s = &scenarios[*i];
        let rps = stat(samples, |x| x.rps);
        let pcs = stat(samples, |x| x.per_cpu_second);
        let p50 = stat(samples, |x| x.p50_ms);
        let p99 = stat(samples, |x| x.p99_ms);
        let _ = writeln!(
            table,
            "{:<24} {:<15} {:>8.0} [{:.0}-{:.0}] {:>8.0} [{:.0}-{:.0}] {:>9.2} {:>9.2}",
            s.name,
            s.target.label(),
            rps.0,
            rps.1,
            rps.2,
            pcs.0,
            pcs.1,
            pcs.2,
            p50.0,
            p99.0
        );
        let _ = writeln!(
            json,
            "    {{\"scenario\": \"{}\", \"target\": \"{}\", \"connections\": {}, \
            \"rps\": {{\"median\": {:.1}, \"min\": {:.1}, \"max\": {:.1}}}, \
            \"requests_per_cpu_second\": {{\"median\": {:.1}, \"min\": {:.1}, \"max\": {:.1}}}, \
            \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}{}",
            s.name,
            s.target.label(),
            s.connections,
            rps.0,
            rps.1,
            rps.2,
            pcs.0,
            pcs.1,
            pcs.2,
            p50.0,
            p99.0,
            if k + 1 == results.len() { "" } else { "," }
        );
    }
    json.push_str("  ],\n  \"ratios_ebpf_lb_over_nginx\": {");
    let _ = writeln!(table, "\nebpf-lb / nginx (medians):");
    let mut first = true;
    for name in [
        "http1-keepalive-c32",
        "http1-keepalive-c128",
        "tls-full-handshake-c32",
        "tls-resumed-handshake-c32",
        "h2-tls-c32-m10",
    ] {
        let med = |t: Target, f: fn(&Sample) -> f64| -> Option<f64> {
            results
                .iter()
                .find(|(i, _)| scenarios[*i].name == name && scenarios[*i].target == t)
                .map(|(_, v)| stat(v, f).0)
        };
        let (Some(lb), Some(ng)) = (
            med(Target::EbpfLb, |x| x.per_cpu_second),
            med(Target::Nginx, |x| x.per_cpu_second),
        ) else {
            continue;
        };
        let (Some(lbr), Some(ngr)) = (
            med(Target::EbpfLb, |x| x.rps),
            med(Target::Nginx, |x| x.rps),
        ) else {
            continue;
        };
        let (Some(lbp), Some(ngp)) = (
            med(Target::EbpfLb, |x| x.p99_ms),
            med(Target::Nginx, |x| x.p99_ms),
        ) else {
            continue;
        };
        let _ = writeln!(
            table,
            "  {name:<24} requests per CPU-second {:.2}x   rps {:.2}x   p99 {:.2} vs {:.2} ms",
            lb / ng,
            lbr / ngr,
            lbp,
            ngp
        );
        let _ = write!(
            json,
            "{}\n    \"{name}\": {{\"requests_per_cpu_second\": {:.3}, \"rps\": {:.3}}}",
            if first { "" } else { "," },
            lb / ng,
            lbr / ngr
        );
        first = false;
    }
    json.push_str("\n  },\n  \"paired_keepalive\": [");
    let _ = writeln!(
        table,
        "\nHTTP/1.1 keep-alive, both proxies loaded at once (sharing CPU 0; {PAIRED_ROUNDS} rounds):"
    );
    let mut sep = "";
    for connections in KEEPALIVE_CONNECTIONS {
        let ratios = paired
            .iter()
            .filter(|p| p.connections == connections && p.nginx > 0.0)
            .map(|p| p.ebpf_lb / p.nginx)
            .collect();
        let Some((med, lo, hi)) = median_min_max(ratios) else {
            continue;
        };
        let _ = writeln!(
            table,
            "  c{connections:<4} ebpf-lb / nginx requests per CPU-second {med:.3}x [{lo:.3}-{hi:.3}]"
        );
        let _ = write!(
            json,
            "{sep}\n    {{\"connections\": {connections}, \"ratio\": {{\"median\": {med:.3}, \"min\": {lo:.3}, \"max\": {hi:.3}}}}}"
        );
        sep = ",";
    }
    json.push_str("\n  ],\n  \"fixed_rate_latency_ms\": [");
    let _ = writeln!(
        table,
        "\nlatency at fixed rates (l7-load, open loop, 32 connections; medians of {LATENCY_RUNS} runs, the proxies alternating):\n\
         {:>8} {:<15} {:>9} {:>9} {:>9} {:>7}",
        "rate/s", "target", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    let by_target = latency.iter().flat_map(|r| {
        [
            (r.rate, Target::Nginx, &r.nginx),
            (r.rate, Target::EbpfLb, &r.lb),
        ]
    });
    for (k, (rate, target, runs)) in by_target.enumerate() {
        let med = |f: fn(&Latency) -> f64| -> f64 {
            median_min_max(runs.iter().map(f).collect()).map_or(f64::NAN, |(m, _, _)| m)
        };
        let (p50, p99, p999, errors) = (
            med(|l| l.p50),
            med(|l| l.p99),
            med(|l| l.p999),
            med(|l| l.errors),
        );
        let _ = writeln!(
            table,
            "{rate:>8} {:<15} {p50:>9.3} {p99:>9.3} {p999:>9.3} {errors:>7.0}",
            target.label()
        );
        let _ = write!(
            json,
            "{}\n    {{\"rate\": {rate}, \"target\": \"{}\", \"p50\": {p50:.3}, \"p99\": {p99:.3}, \"p999\": {p999:.3}, \"errors\": {errors}}}",
            if k == 0 { "" } else { "," },
            target.label()
        );
    }
    json.push_str("\n  ],\n  \"paired_p99\": [");
    let _ = writeln!(
        table,
        "\nebpf-lb p99 / nginx p99, run by run (runs taken back to back):"
    );
    let mut sep = "";
    for RateRuns { rate, nginx, lb } in latency {
        let Some(((med, lo, hi), at_or_below)) = paired_p99(nginx, lb) else {
            continue;
        };
        let n = nginx.len().min(lb.len());
        let _ = writeln!(
            table,
            "  {rate:>6}/s {med:.3}x [{lo:.3}-{hi:.3}], at or below nginx's in {at_or_below} of {n} runs"
        );
        let _ = write!(
            json,
            "{sep}\n    {{\"rate\": {rate}, \"ratio\": {{\"median\": {med:.3}, \"min\": {lo:.3}, \"max\": {hi:.3}}}, \"at_or_below\": {at_or_below}, \"runs\": {n}}}"
        );
        sep = ",";
    }
    json.push_str("\n  ]\n}\n");
    println!("{table}");
    let out = root.join("target/bench/l7.json");
    fs::write(&out, json)?;
    println!("written: {}", out.display());
    Ok(())
}

/// The number after `"key":` in a flat JSON object (what `l7-load` prints).
fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &text[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// One measurement of `s` for `seconds` with its load generator (on CPU 1).
fn load(s: &Scenario, seconds: u32) -> Result<Sample> {
    if s.h2 {
        h2load(s, seconds)
    } else if s.full_handshake {
        s_time(s, seconds)
    } else {
        wrk(s, seconds)
    }
}

/// `s.connections` concurrent `openssl s_time -new` clients (each one connection at a time,
/// a new session for each: a full handshake, then `GET /`), on CPU 1. s_time reports counts
/// only: p50/p99 stay 0.
fn s_time(s: &Scenario, seconds: u32) -> Result<Sample> {
    let started = Instant::now();
    let clients = (0..s.connections)
        .map(|_| {
            Command::new("taskset")
                .args(["-c", "1", "openssl", "s_time", "-new", "-www", "/"])
                .args(["-connect", &s.url])
                .args(["-time", &seconds.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting openssl s_time")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sample = Sample::default();
    for client in clients {
        let out = client
            .wait_with_output()
            .context("waiting for openssl s_time")?;
        let text = String::from_utf8_lossy(&out.stdout);
        sample.requests += parse_s_time(&text)
            .with_context(|| format!("parsing openssl s_time output:\n{text}"))?;
    }
    sample.rps = sample.requests / started.elapsed().as_secs_f64();
    Ok(sample)
}

/// `N connections in T real seconds, B bytes read per connection`: N.
fn parse_s_time(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.contains("connections in") && l.contains("real seconds"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn h2load(s: &Scenario, seconds: u32) -> Result<Sample> {
    let mut c = Command::new("taskset");
    c.args(["-c", "1", "h2load", "-t1", "-m10"])
        .arg(format!("-c{}", s.connections))
        .arg(format!("-D{seconds}"))
        .arg(&s.url);
    let out = cmd::capture(&mut c)?;
    parse_h2load(&out).with_context(|| format!("parsing h2load output:\n{out}"))
}

/// `finished in 5.00s, 98765.43 req/s, ...` and `requests: N total, N started, N done, N
/// succeeded, ...`. h2load prints no percentiles: p50/p99 stay 0.
fn parse_h2load(out: &str) -> Option<Sample> {
    let mut s = Sample::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in") {
            let rps = rest.split(',').nth(1)?.trim().strip_suffix("req/s")?;
            s.rps = rps.trim().parse().ok()?;
        } else if let Some(rest) = t.strip_prefix("requests:") {
            let ok = rest.split(',').find(|p| p.trim().ends_with("succeeded"))?;
            s.requests = ok.split_whitespace().next()?.parse().ok()?;
        }
    }
    (s.requests > 0.0).then_some(s)
}

/// wrk on CPU 1, one thread, `connections` for `seconds` (the caller adds the URL).
fn wrk_command(connections: u32, seconds: u32) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    c
}

/// Requests per CPU-second from a request count and the CPU clock ticks (1/100 s) spent.
fn per_cpu_second(requests: f64, ticks: u64) -> f64 {
    if ticks == 0 {
        0.0
    } else {
        requests * 100.0 / ticks as f64
    }
}

/// Median, minimum and maximum (`None` for no values).
fn median_min_max(mut xs: Vec<f64>) -> Option<(f64, f64, f64)> {
    xs.sort_by(f64::total_cmp);
    Some((*xs.get(xs.len() / 2)?, *xs.first()?, *xs.last()?))
}

fn wrk(s: &Scenario, seconds: u32) -> Result<Sample> {
    let mut c = wrk_command(s.connections, seconds);
    c.arg("--latency");
    if s.close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(&s.url);
    let out = cmd::capture(&mut c)?;
    parse_wrk(&out).with_context(|| format!("parsing wrk output:\n{out}"))
}

fn parse_wrk(out: &str) -> Option<Sample> {
    let ms = |v: &str| -> Option<f64> {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().ok().map(|x| x / 1000.0)
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().ok()
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().ok().map(|x| x * 1000.0)
        } else {
            None
        }
    };
    let mut s = Sample::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            s.rps = v.trim().parse().ok()?;
        } else if t.contains("requests in") {
            s.requests = t.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = t.strip_prefix("50%") {
            s.p50_ms = ms(v)?;
        } else if let Some(v) = t.strip_prefix("99%") {
            s.p99_ms = ms(v)?;
        }
    }
    (s.requests > 0.0).then_some(s)
}

/// utime + stime (clock ticks) of every thread of `pids`.
fn cpu_ticks(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(stat) = fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14, stime 15 (1-based).
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += num(11) + num(12);
        }
    }
    total
}

fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    // nginx forks its worker after start-up: wait for it.
    for _ in 0..100 {
        if let Ok(c) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            let kids: Vec<u32> = c
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if !kids.is_empty() {
                pids.extend(kids);
                break;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    pids
}

fn wait_port(port: u16) -> Result<()> {
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

fn start_nginx(work: &Path, name: &str, conf: &str, cpu: &str) -> Result<Proc> {
    let path = work.join(format!("{name}.conf"));
    fs::write(&path, conf)?;
    let child = Command::new("taskset")
        .args(["-c", cpu, "nginx", "-p"])
        .arg(work)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting nginx {name}"))?;
    Ok(Proc(child))
}

fn common(work: &Path, name: &str) -> String {
    let w = work.display();
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {w}/{name}.pid;\n\
         error_log {w}/{name}.err warn;\nevents {{ worker_connections 8192; }}\n"
    )
}

fn backend_conf(work: &Path) -> String {
    let w = work.display();
    format!(
        "{}http {{\n  access_log off;\n  keepalive_requests 10000000;\n  \
         client_body_temp_path {w}/b-body;\n  proxy_temp_path {w}/b-proxy;\n  \
         fastcgi_temp_path {w}/b-fcgi;\n  uwsgi_temp_path {w}/b-uwsgi;\n  scgi_temp_path {w}/b-scgi;\n  \
         server {{\n    listen 127.0.0.1:{BACKEND} backlog=4096;\n    \
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        common(work, "backend")
    )
}

/// The suite order ebpf-lb's HTTPS listener prefers (`tls::config`), given to nginx too so
/// both negotiate the same suite with `openssl s_time`, wrk and h2load (whose OpenSSL
/// would otherwise pick AES-256-GCM-SHA384).
const TLS13_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";
const TLS12_SUITES: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

fn proxy_conf(work: &Path, cert: &Path, key: &Path) -> String {
    let w = work.display();
    format!(
        "{}http {{\n  access_log off;\n  keepalive_requests 10000000;\n  \
         client_body_temp_path {w}/p-body;\n  proxy_temp_path {w}/p-proxy;\n  \
         fastcgi_temp_path {w}/p-fcgi;\n  uwsgi_temp_path {w}/p-uwsgi;\n  scgi_temp_path {w}/p-scgi;\n  \
         upstream be {{ server 127.0.0.1:{BACKEND}; keepalive 256; keepalive_requests 10000000; }}\n  \
         server {{\n    listen 127.0.0.1:{NGINX_HTTP} backlog=4096;\n    \
         listen 127.0.0.1:{NGINX_HTTPS} ssl http2 backlog=4096;\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    \
         ssl_prefer_server_ciphers on;\n    ssl_ciphers {TLS12_SUITES};\n    \
         ssl_conf_command Ciphersuites {TLS13_SUITES};\n    \
         location / {{\n      proxy_pass http://be;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
         proxy_set_header X-Request-ID $request_id;\n      proxy_set_header X-Real-IP $remote_addr;\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header X-Forwarded-Host $host;\n      proxy_set_header X-Forwarded-Port $server_port;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
        common(work, "proxy"),
        cert.display(),
        key.display()
    )
}

fn lb_manifests(cert: &Path, key: &Path) -> Result<String> {
    let indent = |p: &PathBuf| -> Result<String> {
        Ok(fs::read_to_string(p)?
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect())
    };
    Ok(format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: be, namespace: bench}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: be-1, namespace: bench, labels: {{kubernetes.io/service-name: be}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {BACKEND}}}]\n\
         endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: bench}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: be, namespace: bench}}\n\
         spec:\n  ingressClassName: ebpf-lb\n  rules: [{{http: {{paths: [{{path: /, pathType: Prefix, \
         backend: {{service: {{name: be, port: {{name: http}}}}}}}}]}}}}]\n",
        indent(&cert.to_path_buf())?,
        indent(&key.to_path_buf())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_of_runs() {
        assert_eq!(median_min_max(vec![]), None);
        assert_eq!(median_min_max(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(per_cpu_second(500.0, 0), 0.0);
        assert_eq!(per_cpu_second(500.0, 50), 1000.0);
    }

    #[test]
    fn p99_compared_run_by_run() {
        let p99 = |ms: f64| Latency {
            p99: ms,
            ..Latency::default()
        };
        let nginx = [p99(1.0), p99(2.0), p99(0.5)];
        let lb = [p99(0.9), p99(3.0), p99(0.5)];
        // Ratios 0.9, 1.5, 1.0: two at or below.
        assert_eq!(paired_p99(&nginx, &lb), Some(((1.0, 0.9, 1.5), 2)));
        assert_eq!(paired_p99(&[], &[]), None);
    }

    #[test]
    fn h2load_summary_parses() {
        let out = "starting benchmark...\n\
            finished in 5.00s, 41234.80 req/s, 1.50MB/s\n\
            requests: 206174 total, 206494 started, 206174 done, 206174 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 206174 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let s = parse_h2load(out).expect("parsed");
        assert_eq!((s.rps, s.requests), (41234.80, 206174.0));
        assert!(
            parse_h2load("finished in 5.00s, 0 req/s\nrequests: 0 total, 0 succeeded\n").is_none()
        );
    }

    #[test]
    fn wrk_latency_distribution_parses() {
        let out = "Running 5s test @ http://127.0.0.1:19003/\n  Latency Distribution\n     50%  412.00us\n     75%    1.02ms\n     90%    2.00ms\n     99%    3.50ms\n  250000 requests in 5.00s, 30.00MB read\nRequests/sec:  50000.00\n";
        let s = parse_wrk(out).expect("parsed");
        assert_eq!(
            (s.rps, s.requests, s.p50_ms, s.p99_ms),
            (50000.0, 250000.0, 0.412, 3.5)
        );
    }

    #[test]
    fn s_time_connection_count_parses() {
        let out = "Collecting connection statistics for 1 seconds\n****\n\n\
            560 connections in 0.72s; 777.78 connections/user sec, bytes read 173040\n\
            560 connections in 2 real seconds, 309 bytes read per connection\n";
        assert_eq!(parse_s_time(out), Some(560.0));
        assert_eq!(parse_s_time("ERROR\n"), None);
    }

    #[test]
    fn l7_load_result_fields() {
        let out = r#"{"achieved_rps":4999.2,"errors":0,"max_ms":3.1,"p50_ms":0.21,"p999_ms":1.5,"p99_ms":0.9,"rate":5000,"requests":25000}"#;
        assert_eq!(json_number(out, "p99_ms"), Some(0.9));
        assert_eq!(json_number(out, "requests"), Some(25000.0));
        assert_eq!(json_number(out, "missing"), None);
    }
}
