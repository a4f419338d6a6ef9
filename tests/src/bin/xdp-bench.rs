//! `cargo xtask bench xdp`: ns/packet of each `lb_xdp` path from BPF_PROG_TEST_RUN with a
//! large `repeat` (the kernel reports the mean per run), beside the trivial `lb_xdp_pass`
//! program measured in the same rounds. Prints a table; writes JSON to `--out`.
//!
//! Needs root. Each path is measured `--runs` times (rounds interleave all paths, so drift
//! on a shared machine hits them alike); the report gives median, min and max, and the
//! ratio of the median to the baseline's median.
use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Parser;
use lb_common::{
    EgressPort, NO_NODE, NODE_HAS_V4, NODE_LOCAL, NODE_REDIRECT, NodeInfo, PROG_XDP, PROG_XDP_PASS,
    PROTO_TCP, PROTO_UDP, VipKey,
};
use lb_userspace::dataplane::policy::KernelPolicy;
use tests::{
    packet::{NODE_MAC, PacketBuilder, tcp_flags},
    xdp::{Loaded, PROG_XDP_RESTORE, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, flow_key},
};

#[derive(Parser)]
struct Args {
    /// Runs of each path (median, min, max are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// BPF_PROG_TEST_RUN repeat per run.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
    /// Measure only the paths whose name contains this (the baselines always run): for
    /// profiling one path with `perf record`.
    #[arg(long)]
    only: Option<String>,
    /// Load this eBPF object instead of the one built into the binary (to compare builds
    /// of lb-ebpf without relinking the benchmark).
    #[arg(long)]
    object: Option<PathBuf>,
}

const VIP_TCP: VipKey = VipKey::v4([198, 18, 0, 210], 80, PROTO_TCP);
const VIP_UDP: VipKey = VipKey::v4([198, 18, 0, 210], 53, PROTO_UDP);

/// One measured path: its own loaded object (so map state does not leak between paths),
/// the program, the frame and the action it must return.
///
/// `single`: the kernel does not restore the frame between repetitions, so a path that
/// grows the frame (encapsulation) would run out of headroom after a dozen repeats. Such
/// paths are timed with repeat 1, `SINGLE_SHOTS` times per run (median), beside the
/// baseline timed the same way, so the fixed timer overhead cancels in the ratio.
struct Path {
    name: &'static str,
    single: bool,
    dp: Loaded,
    prog: &'static str,
    frame: Vec<u8>,
    action: u32,
}

fn steer_to_peer(dp: &mut Loaded) {
    dp.set_node(
        0,
        NodeInfo {
            v4: [198, 18, 0, 2],
            mac: NODE_MAC,
            flags: NODE_LOCAL | NODE_HAS_V4,
            ..NodeInfo::default()
        },
    );
    dp.set_node(
        1,
        NodeInfo {
            v4: [198, 18, 0, 3],
            mac: [2, 0, 0, 0, 0, 3],
            flags: NODE_HAS_V4,
            ..NodeInfo::default()
        },
    );
    dp.fill_maglev(0, 1);
    dp.edit_config(|c| {
        c.steering = 1;
        c.node_v4 = [198, 18, 0, 2];
    });
}

/// The peer is behind another interface (`lo` here): `NODE_REDIRECT`, `EGRESS`, `TX_PORTS`.
fn redirect_to_peer(dp: &mut Loaded) {
    dp.set_node(
        1,
        NodeInfo {
            v4: [198, 18, 0, 3],
            mac: [2, 0, 0, 0, 0, 3],
            flags: NODE_HAS_V4 | NODE_REDIRECT,
            ..NodeInfo::default()
        },
    );
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    dp.set_tx_port(1, lo);
    dp.set_egress(
        1,
        EgressPort {
            ifindex: lo,
            src_mac: [2, 0, 0, 0, 0, 9],
            _pad: 0,
        },
    );
}

fn path(
    name: &'static str,
    prog: &'static str,
    frame: Vec<u8>,
    action: u32,
    setup: impl FnOnce(&mut Loaded),
) -> Path {
    let mut dp = Loaded::load();
    dp.set_vips(&[VIP_TCP, VIP_UDP]);
    setup(&mut dp);
    Path {
        name,
        single: false,
        dp,
        prog,
        frame,
        action,
    }
}

fn paths() -> Vec<Path> {
    let syn = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .build()
        .bytes;
    let ack = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
        .tcp_flags(tcp_flags::ACK)
        .payload(&[0; 64])
        .build()
        .bytes;
    let udp = PacketBuilder::udp("198.18.0.1:40000", "198.18.0.210:53")
        .payload(&[0; 64])
        .build()
        .bytes;
    let non_vip = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.99:80")
        .build()
        .bytes;
    let mut fragment = syn.clone();
    fragment[14 + 6] = 0x20; // MF (header checksum not checked by lb_xdp)
    let key = flow_key("198.18.0.1:40000", "198.18.0.210:80", PROTO_TCP);
    let src: IpAddr = "198.18.0.1".parse().expect("ip");
    let policy = |edit: fn(&mut KernelPolicy)| {
        move |dp: &mut Loaded| {
            let mut p = KernelPolicy::default();
            edit(&mut p);
            dp.set_policy(&p);
        }
    };
    vec![
        path(
            "baseline: trivial XDP_PASS",
            PROG_XDP_PASS,
            syn.clone(),
            XDP_PASS,
            |_| {},
        ),
        path("non-VIP pass", PROG_XDP, non_vip, XDP_PASS, |_| {}),
        path(
            "VIP local pass (flow hit)",
            PROG_XDP,
            ack.clone(),
            XDP_PASS,
            move |dp| dp.insert_flow(&key, NO_NODE),
        ),
        // lb_xdp_restore undoes the encapsulation after each run (see lb-ebpf bench.rs),
        // so this path can be repeated like the others; the restore is in the time.
        path(
            "flow hit + IPIP encap (+ restore)",
            PROG_XDP_RESTORE,
            ack.clone(),
            XDP_TX,
            move |dp| {
                dp.load_xdp(PROG_XDP_RESTORE);
                steer_to_peer(dp);
                dp.insert_flow(&key, 1);
            },
        ),
        path(
            "flow hit + IPIP encap + redirect (+ restore)",
            PROG_XDP_RESTORE,
            ack.clone(),
            XDP_REDIRECT,
            move |dp| {
                dp.load_xdp(PROG_XDP_RESTORE);
                steer_to_peer(dp);
                redirect_to_peer(dp);
                dp.insert_flow(&key, 1);
            },
        ),
        single(path(
            "baseline, repeat 1",
            PROG_XDP_PASS,
            syn.clone(),
            XDP_PASS,
            |_| {},
        )),
        // UDP with an idle timeout of 0: every datagram is a new flow (miss, Maglev, insert).
        single(path(
            "new flow + Maglev + encap, repeat 1",
            PROG_XDP,
            udp,
            XDP_TX,
            |dp| {
                steer_to_peer(dp);
                dp.edit_config(|c| c.udp_flow_timeout_ns = 0);
            },
        )),
        path(
            "drop: ACL deny",
            PROG_XDP,
            syn.clone(),
            XDP_DROP,
            policy(|p| {
                p.deny = vec!["198.18.0.0/24".parse().expect("cidr")];
            }),
        ),
        path(
            "drop: penalty box",
            PROG_XDP,
            syn.clone(),
            XDP_DROP,
            move |dp| {
                dp.penalize(src, 3600);
            },
        ),
        // Burst 1 at 1/s: after the first SYN every SYN is over the limit.
        path(
            "drop: new connections/s",
            PROG_XDP,
            syn.clone(),
            XDP_DROP,
            policy(|p| {
                (p.conn_rate, p.conn_burst) = (1, 1);
            }),
        ),
        path(
            "drop: packets/s",
            PROG_XDP,
            ack,
            XDP_DROP,
            policy(|p| {
                (p.pps, p.pps_burst) = (1, 1);
            }),
        ),
        path(
            "drop: malformed (fragment)",
            PROG_XDP,
            fragment,
            XDP_DROP,
            |_| {},
        ),
    ]
}

fn single(mut p: Path) -> Path {
    p.single = true;
    p
}

/// Single-shot runs per measurement of a `single` path.
const SINGLE_SHOTS: usize = 2000;

/// One measurement of `p`: mean ns per run over `repeat`, or for a `single` path the
/// median of `SINGLE_SHOTS` runs of repeat 1.
fn measure(p: &Path, repeat: u32) -> Result<f64, String> {
    let once = |repeat: u32| -> Result<f64, String> {
        let (action, _, d): (u32, Vec<u8>, Duration) =
            p.dp.run_xdp(p.prog, &p.frame, repeat)
                .map_err(|e| format!("{}: {e}", p.name))?;
        if action != p.action {
            return Err(format!("{}: action {action} during the run", p.name));
        }
        Ok(d.as_nanos() as f64)
    };
    if !p.single {
        return once(repeat);
    }
    let mut shots = Vec::with_capacity(SINGLE_SHOTS);
    for _ in 0..SINGLE_SHOTS {
        shots.push(once(1)?);
    }
    Ok(median(&mut shots))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("xdp-bench needs root (BPF_PROG_TEST_RUN)".into());
    }
    if args.runs < 3 {
        return Err("--runs must be at least 3".into());
    }
    if let Some(path) = &args.object {
        tests::xdp::use_object_file(path)?;
    }
    let mut paths = paths();
    if let Some(only) = &args.only {
        paths.retain(|p| p.name.starts_with("baseline") || p.name.contains(only.as_str()));
    }
    // Warm up and check that each path takes the branch it is named after.
    for p in &paths {
        let mut action = 0;
        for _ in 0..2 {
            let (a, out, _) =
                p.dp.run_xdp(p.prog, &p.frame, 1)
                    .map_err(|e| e.to_string())?;
            action = a;
            if p.prog == PROG_XDP_RESTORE && out != p.frame {
                return Err(format!("{}: the frame was not restored", p.name));
            }
        }
        if action != p.action {
            return Err(format!("{}: action {action}, want {}", p.name, p.action));
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _round in 0..args.runs {
        for (i, p) in paths.iter().enumerate() {
            samples[i].push(measure(p, args.repeat)?);
        }
    }
    let base = median(&mut samples[0].clone());
    let single_base = paths
        .iter()
        .position(|p| p.single)
        .map(|i| median(&mut samples[i].clone()))
        .unwrap_or(base);
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>8}",
        "path (ns/packet)", "median", "min", "max", "x base"
    );
    let mut rows = Vec::new();
    for (p, s) in paths.iter().zip(samples.iter_mut()) {
        let med = median(s);
        let (min, max) = (s[0], s[s.len() - 1]);
        let base = if p.single { single_base } else { base };
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>8.2}",
            p.name,
            med,
            min,
            max,
            med / base
        );
        rows.push(serde_json::json!({
            "path": p.name, "median_ns": med, "min_ns": min, "max_ns": max,
            "ratio_to_baseline": med / base, "samples_ns": s, "repeat_1": p.single,
        }));
    }
    let report = serde_json::json!({
        "bench": "xdp", "runs": args.runs, "repeat": args.repeat,
        "note": "BPF_PROG_TEST_RUN mean ns per run; baseline is lb_xdp_pass in the same rounds",
        "paths": rows,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
