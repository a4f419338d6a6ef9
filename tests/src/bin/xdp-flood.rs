//! `cargo xtask bench xdp`, second part: drop throughput under a flood on a veth pair,
//! generated in the kernel (`lb_xdp_tx` through BPF_PROG_TEST_RUN in live-frames mode, see
//! `tests::flood`). The receiver's veth runs, in turn:
//!
//! - a bare XDP_DROP (the ceiling), counted by the veth's `rx_packets`;
//! - `lb_xdp`'s header parser and XDP_DROP (the floor of any drop decided on the
//!   headers: what reading the frame costs), counted by `rx_packets`;
//! - `lb_xdp` with the flood source in `DENY_V4` (ACL drop), counted by `STATS` drop_acl;
//! - `lb_xdp` with 1 new connection/s (burst 1) under a SYN flood to the VIP (rate-limit
//!   drop), counted by `STATS` drop_rate_conn;
//! - XDP_PASS + an nftables rule dropping the flood source at prerouting priority -300 (the
//!   peer), counted by the rule's counter.
//!
//! Each run floods `--packets` frames (or stops at `--max-seconds`); the dropped rate is
//! the case's own counter divided by the wall time of the flood. A run fails unless at
//! least 99% of the frames the receiver saw were counted by the path the case is named
//! after, so a broken path cannot pass for a fast one. Rounds interleave the cases, so
//! drift on a shared machine hits them alike, and each round starts one case later, so
//! no case always runs right after the same other one (the case in third place ran up to
//! 13% slower when the order was fixed); each run follows an untimed warm-up flood. The
//! report gives median, min and max of `--runs` runs (a multiple of the 5 cases puts each
//! in every place equally often) and the ratios the issue sets goals for, both as a ratio
//! of medians and paired (median, min and max over rounds of the ratio of the two cases'
//! runs in the same round). Needs root and `nft`.
//!
//! Where the receiver runs: by default its veth is served in softirq right after each of
//! the generator's transmissions, on the generator's CPU, so every case also pays the
//! generator's ~100 ns per frame (ratios are pulled towards 1). `--cpu G --rx-cpu R`
//! serves it by threaded NAPI on CPU R instead, as a NIC's receive queue is served apart
//! from the sender: the receive path alone sets the rate, up to what the generator sends.
//!
//! The generator's transmissions raise the receiver's softirq work on the generator's own
//! CPU, so one core does both and the figure is generator + receiver cost. Beside the wall
//! rate the report gives `busy` (the run time the kernel reports over wall time: near 1 on
//! a quiet machine) and the dropped rate per second of that run time, which a shared CPU
//! disturbs less; ratios are given both ways. The wall figures are the result; take them
//! on a quiet machine.
use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Parser;
use lb_common::{PROG_XDP, PROG_XDP_PASS, PROTO_TCP, Reason, VipKey};
use lb_userspace::dataplane::policy::{Cidr, KernelPolicy};
use tests::{
    flood::{
        self, FLOOD_SRC, FloodSpec, FloodTopology, NftDrop, PROG_XDP_DROP, PROG_XDP_PARSE_DROP,
        PROG_XDP_TX, loaded_xdp,
    },
    xdp::Loaded,
};

#[derive(Parser)]
struct Args {
    /// Runs of each case (median, min, max are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Frames per run.
    #[arg(long, default_value_t = 20_000_000)]
    packets: u64,
    /// A run stops after this many seconds even if not all frames were sent.
    #[arg(long, default_value_t = 20)]
    max_seconds: u64,
    /// Live-frames batch size (1..=256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Pin the generator (and with it the receiver's softirq work) to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Serve the receiver's veth on this CPU instead (threaded NAPI, its kernel thread
    /// pinned here), apart from the generator's (`--cpu`, required, another CPU): the
    /// receive path alone then sets the drop rates, as on a NIC.
    #[arg(long)]
    rx_cpu: Option<usize>,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
    /// Load this eBPF object instead of the one built into the binary (to compare builds
    /// of lb-ebpf without relinking the benchmark).
    #[arg(long)]
    object: Option<PathBuf>,
}

const VIP_TCP: VipKey = VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP);

/// What counts the frames a case dropped.
#[derive(Clone, Copy)]
enum Counter {
    /// The receiver veth's `rx_packets` (every frame its XDP program saw).
    RxPackets,
    /// `lb_xdp`'s `STATS` for this reason, summed over VIPs and CPUs.
    Stats(Reason),
    /// The nftables rule's counter.
    Nft,
}

struct Case {
    key: &'static str,
    name: &'static str,
    prog: &'static str,
    counter: Counter,
    dp: Loaded,
}

fn case(
    key: &'static str,
    name: &'static str,
    prog: &'static str,
    counter: Counter,
    policy: Option<KernelPolicy>,
) -> Result<Case, String> {
    let mut dp = Loaded::load();
    loaded_xdp(&mut dp.ebpf, prog)?;
    if let Some(policy) = policy {
        dp.set_vips(&[VIP_TCP]);
        dp.set_policy(&policy);
    }
    Ok(Case {
        key,
        name,
        prog,
        counter,
        dp,
    })
}

fn cases() -> Result<Vec<Case>, String> {
    let src: IpAddr = FLOOD_SRC.parse().map_err(|e| format!("{FLOOD_SRC}: {e}"))?;
    let deny = KernelPolicy {
        deny: vec![Cidr::new(src, 32)],
        ..KernelPolicy::default()
    };
    // Burst 1 at 1/s: after the first SYN every SYN is over the limit.
    let conn_limit = KernelPolicy {
        conn_rate: 1,
        conn_burst: 1,
        ..KernelPolicy::default()
    };
    Ok(vec![
        case(
            "xdp_drop",
            "bare XDP_DROP (ceiling)",
            PROG_XDP_DROP,
            Counter::RxPackets,
            None,
        )?,
        case(
            "parse_drop",
            "floor: lb_xdp's parser + XDP_DROP",
            PROG_XDP_PARSE_DROP,
            Counter::RxPackets,
            None,
        )?,
        case(
            "lb_acl_drop",
            "lb_xdp ACL drop (DENY_V4)",
            PROG_XDP,
            Counter::Stats(Reason::DropAcl),
            Some(deny),
        )?,
        case(
            "lb_rate_drop",
            "lb_xdp conn-rate drop (SYN flood)",
            PROG_XDP,
            Counter::Stats(Reason::DropRateConn),
            Some(conn_limit),
        )?,
        case(
            "nft_drop",
            "XDP_PASS + nft drop (prerouting -300)",
            PROG_XDP_PASS,
            Counter::Nft,
            None,
        )?,
    ])
}

/// One run of one case.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Frames the case's counter saw dropped, per second of flood, in millions.
    dropped_mpps: f64,
    /// Frames the generator sent per second, in millions.
    sent_mpps: f64,
    sent: u64,
    dropped: u64,
    /// Frames the receiver's veth saw (its `rx_packets`).
    received: u64,
    /// Frames that did not fit the receiver's ring (the generator veth's `tx_dropped`).
    ring_full: u64,
    seconds: f64,
    /// Kernel-reported run time over wall time: near 1 when nothing else took the CPU.
    busy: f64,
    /// Dropped frames per second of kernel-reported run time, in millions: less disturbed
    /// by a shared CPU than `dropped_mpps`, but blind to receiver work deferred to
    /// ksoftirqd (then `ring_full` grows).
    busy_mpps: f64,
}

fn run_case(
    topo: &FloodTopology,
    gen_dp: &Loaded,
    c: &mut Case,
    spec: &FloodSpec,
    warm: Option<&FloodSpec>,
) -> Result<Sample, String> {
    let generator = flood::xdp(&gen_dp.ebpf, PROG_XDP_TX)?;
    let attached = topo.attach_receiver(loaded_xdp(&mut c.dp.ebpf, c.prog)?)?;
    let nft = match c.counter {
        Counter::Nft => Some(NftDrop::install(topo)?),
        _ => None,
    };
    let count = |dp: &Loaded, rx: u64| -> Result<u64, String> {
        Ok(match c.counter {
            Counter::RxPackets => rx,
            Counter::Stats(reason) => dp.reason_packets(reason),
            Counter::Nft => nft.as_ref().ok_or("no nft rule")?.dropped()?,
        })
    };
    // An untimed flood first: the receiver's path (page pool, caches, NAPI) reaches its
    // steady state after each attach before the timed one starts.
    if let Some(warm) = warm {
        flood::flood(topo, generator, warm)?;
    }
    let rx0 = topo.settle()?;
    let ring0 = topo.generator_stats()?.tx_dropped;
    let count0 = count(&c.dp, rx0)?;
    let sent = flood::flood(topo, generator, spec)?;
    let rx1 = topo.settle()?;
    let ring1 = topo.generator_stats()?.tx_dropped;
    let count1 = count(&c.dp, rx1)?;
    drop(nft);
    attached.detach(loaded_xdp(&mut c.dp.ebpf, c.prog)?)?;

    let received = rx1.saturating_sub(rx0);
    let dropped = count1.saturating_sub(count0);
    if received == 0 {
        return Err(format!(
            "{}: the receiver saw none of the {} frames sent",
            c.name, sent.packets
        ));
    }
    if dropped.saturating_mul(100) < received.saturating_mul(99) {
        return Err(format!(
            "{}: only {dropped} of the {received} frames received were counted as dropped \
             by this path",
            c.name
        ));
    }
    let seconds = sent.elapsed.as_secs_f64();
    Ok(Sample {
        dropped_mpps: dropped as f64 / seconds / 1e6,
        sent_mpps: sent.packets as f64 / seconds / 1e6,
        sent: sent.packets,
        dropped,
        received,
        ring_full: ring1.saturating_sub(ring0),
        seconds,
        busy: sent.kernel.as_secs_f64() / seconds,
        busy_mpps: dropped as f64 / sent.kernel.as_secs_f64().max(1e-9) / 1e6,
    })
}

/// The median (upper of the two middle values); NaN for no values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !tests::netns::is_root() {
        return Err("xdp-flood needs root (namespaces, XDP, BPF_PROG_TEST_RUN)".into());
    }
    if let Some(path) = &args.object {
        tests::xdp::use_object_file(path)?;
    }
    if args.runs < 3 {
        return Err("--runs must be at least 3".into());
    }
    if !(1..=256).contains(&args.batch) {
        return Err("--batch must be within 1..=256".into());
    }
    if !flood::have_nft() {
        return Err("nft is missing: run `cargo xtask setup --bench`".into());
    }
    // Ctrl-C / SIGTERM end the flood at the next chunk and unwind through the guards, which
    // delete the namespaces (and with them the veth pair and the nftables table).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .map_err(|e| format!("installing the signal handler: {e}"))?;
    }
    let load_before = loadavg();
    match (args.cpu, args.rx_cpu) {
        (_, None) => {}
        (Some(g), Some(r)) if g != r => {}
        _ => return Err("--rx-cpu needs --cpu, another CPU, for the generator".into()),
    }
    let mut topo = FloodTopology::create(&format!("xfl{}", std::process::id()))?;
    topo.receive_cpu = args.rx_cpu;
    let mut gen_dp = Loaded::load();
    loaded_xdp(&mut gen_dp.ebpf, PROG_XDP_TX)?;
    let mut cases = cases()?;
    let spec = FloodSpec {
        frame: flood::syn_frame(),
        packets: args.packets,
        max_time: Duration::from_secs(args.max_seconds),
        batch: args.batch,
        cpu: args.cpu,
        stop: Some(interrupted.clone()),
    };
    // Warm up, and check each path before timing it.
    let warm = FloodSpec {
        packets: args.packets.min(200_000),
        ..spec.clone()
    };
    for c in &mut cases {
        run_case(&topo, &gen_dp, c, &warm, None)?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    let n = cases.len();
    for round in 0..args.runs {
        // Each round starts one case later: a case measured right after another one runs
        // measurably slower (up to 13% seen), so no case may always hold one position.
        for i in (0..n).map(|k| (k + round) % n) {
            if interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let c = &mut cases[i];
            samples[i].push(run_case(&topo, &gen_dp, c, &spec, Some(&warm))?);
        }
    }
    let load_after = loadavg();

    let placement = match (args.cpu, args.rx_cpu) {
        (Some(g), Some(r)) => format!("generator on CPU {g}, receiver (threaded NAPI) on CPU {r}"),
        (Some(g), None) => format!("generator and receiver softirq on CPU {g}"),
        _ => "generator and receiver softirq on one CPU".to_owned(),
    };
    println!(
        "flood: {} x {} frames of {} bytes, batch {}, {placement}; load average before \
         {load_before}, after {load_after}",
        args.runs,
        args.packets,
        spec.frame.len(),
        args.batch
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>9} {:>5} {:>11} {:>9}",
        "case (dropped Mpps)",
        "median",
        "min",
        "max",
        "sent Mpps",
        "busy",
        "per busy s",
        "ring full"
    );
    let mut medians = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for (c, s) in cases.iter().zip(&samples) {
        let rates: Vec<f64> = s.iter().map(|x| x.dropped_mpps).collect();
        let med = median(rates.clone());
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let sent = median(s.iter().map(|x| x.sent_mpps).collect());
        let busy = median(s.iter().map(|x| x.busy).collect());
        let busy_mpps = median(s.iter().map(|x| x.busy_mpps).collect());
        let ring_full: u64 = s.iter().map(|x| x.ring_full).sum();
        println!(
            "{:<40} {med:>7.2} {min:>7.2} {max:>7.2} {sent:>9.2} {busy:>5.2} {busy_mpps:>11.2} \
             {ring_full:>9}",
            c.name
        );
        medians.insert(c.key, (med, busy_mpps));
        rows.push(serde_json::json!({
            "case": c.key, "name": c.name, "program": c.prog,
            "median_mpps": med, "min_mpps": min, "max_mpps": max, "sent_median_mpps": sent,
            "median_mpps_per_kernel_second": busy_mpps,
            "runs": s.iter().map(|x| serde_json::json!({
                "dropped_mpps": x.dropped_mpps, "sent_mpps": x.sent_mpps, "sent": x.sent,
                "dropped": x.dropped, "received": x.received, "ring_full": x.ring_full,
                "seconds": x.seconds, "kernel_busy": x.busy,
                "dropped_mpps_per_kernel_second": x.busy_mpps,
            })).collect::<Vec<_>>(),
        }));
    }
    let least_busy = samples
        .iter()
        .flatten()
        .map(|x| x.busy)
        .fold(f64::INFINITY, f64::min);
    if least_busy < 0.9 {
        println!(
            "note: in some run the generator ran only {:.0}% of the wall time (busy): other \
             tasks shared its CPU, so these figures are noisy; measure on a quiet machine",
            least_busy * 100.0
        );
    }
    // (numerator, denominator, goal: at least this; 0 for none)
    const RATIOS: [(&str, &str, f64); 8] = [
        ("lb_acl_drop", "nft_drop", 3.0),
        ("lb_rate_drop", "nft_drop", 3.0),
        ("lb_acl_drop", "xdp_drop", 0.85),
        ("lb_rate_drop", "xdp_drop", 0.85),
        ("nft_drop", "xdp_drop", 0.0),
        ("parse_drop", "xdp_drop", 0.0),
        ("lb_acl_drop", "parse_drop", 0.0),
        ("lb_rate_drop", "parse_drop", 0.0),
    ];
    // Paired figures: the two cases' runs of the same round ran back to back, so their
    // ratio cancels the machine's slower and faster phases (seconds long on this VM), which
    // a ratio of medians over all rounds does not.
    let index = |key: &str| cases.iter().position(|c| c.key == key);
    println!(
        "{:<40} {:>7} {:>11} {:>22} {:>8}",
        "ratio", "of medians", "per busy s", "paired med [min-max]", "goal"
    );
    let mut ratio_json = Vec::new();
    for (a, b, goal) in RATIOS {
        let name = format!("{a} / {b}");
        let wall = medians[a].0 / medians[b].0;
        let busy = medians[a].1 / medians[b].1;
        let paired: Vec<f64> = match (index(a), index(b)) {
            (Some(ia), Some(ib)) => samples[ia]
                .iter()
                .zip(&samples[ib])
                .filter(|(_, y)| y.dropped_mpps > 0.0)
                .map(|(x, y)| x.dropped_mpps / y.dropped_mpps)
                .collect(),
            _ => Vec::new(),
        };
        let p_min = paired.iter().copied().fold(f64::INFINITY, f64::min);
        let p_max = paired.iter().copied().fold(0.0, f64::max);
        let p_med = median(paired.clone());
        let goal_text = if goal > 0.0 {
            format!(">= {goal}")
        } else {
            "-".into()
        };
        let paired_text = format!("{p_med:.2} [{p_min:.2}-{p_max:.2}]");
        println!("{name:<40} {wall:>7.2} {busy:>11.2} {paired_text:>22} {goal_text:>8}");
        ratio_json.push(serde_json::json!({
            "ratio": name, "value": wall, "value_per_kernel_second": busy,
            "paired_median": p_med, "paired_min": p_min, "paired_max": p_max,
            "goal_min": (goal > 0.0).then_some(goal),
        }));
    }
    let report = serde_json::json!({
        "bench": "xdp-flood", "runs": args.runs, "packets_per_run": args.packets,
        "frame_bytes": spec.frame.len(), "batch": args.batch, "cpu": args.cpu,
        "receive_cpu": args.rx_cpu,
        "loadavg_before": load_before, "loadavg_after": load_after,
        "note": "dropped Mpps = the case's own counter over the flood's wall time; generator: \
                 lb_xdp_tx in BPF_PROG_TEST_RUN live-frames mode into a veth; medians of runs; \
                 busy = kernel-reported run time / wall time (well below 1: the CPU was shared, \
                 numbers are noisy); per kernel second = dropped / kernel-reported run time",
        "cases": rows, "ratios": ratio_json,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
