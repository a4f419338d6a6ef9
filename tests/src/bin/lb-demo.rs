//! `cargo xtask demo`: traffic through the VIP, step by step.
//!
//! Builds the demo topology (client, node with VIP 198.18.0.210 and `lb_xdp` in native mode,
//! two backends), starts `ebpf-lb`, curls both routes from the client, shows the replies and
//! the kernel's VIP counters, and removes everything on exit or Ctrl-C.
use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use tests::{
    netns::{is_root, run},
    topology::{ADMIN, BACKENDS, DemoTopology, NODE_IFACE, VIP},
};

#[derive(Parser)]
struct Args {
    /// The ebpf-lb binary.
    #[arg(long)]
    ebpf_lb: PathBuf,
    /// The echo-backend binary.
    #[arg(long)]
    backend: PathBuf,
    /// Manifests directory the daemon serves.
    #[arg(long)]
    manifests: PathBuf,
    /// bpffs directory for the pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/ebpf-lb")]
    bpffs: PathBuf,
    /// Keep everything running after the requests until Ctrl-C (to explore by hand).
    #[arg(long)]
    hold: bool,
}

struct Steps {
    n: usize,
    started: Instant,
}

impl Steps {
    fn step(&mut self, what: &str) {
        self.n += 1;
        println!(
            "\n[{}] {what}  (+{:.1}s)",
            self.n,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!("error: the demo creates network namespaces and attaches XDP: run it as root");
        return ExitCode::FAILURE;
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupted.clone()) {
            eprintln!("error: installing the signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    match demo(&args, &interrupted) {
        Ok(()) => {
            println!("\nDone: namespaces, processes and pinned maps removed.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}\n(everything it created has been removed)");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &Args, interrupted: &AtomicBool) -> Result<(), String> {
    let mut s = Steps {
        n: 0,
        started: Instant::now(),
    };
    let check = || {
        if interrupted.load(Ordering::Relaxed) {
            Err("interrupted".to_owned())
        } else {
            Ok(())
        }
    };

    s.step("Creating network namespaces lbdemo-{client,node,be1,be2} and veth links (198.18.0.0/15 only)");
    let mut topo = DemoTopology::create("lbdemo", &args.bpffs)?;
    println!("    client 198.18.0.1  ->  node n0 198.18.0.2, VIP {VIP}/32 on {NODE_IFACE}");
    for b in &BACKENDS {
        println!(
            "    node {}  ->  {} {}:{} ({})",
            b.node_addr, b.ns, b.ip, b.port, b.name
        );
    }
    check()?;

    s.step("Starting the two backends (stand-ins for the seed's model server and MLflow)");
    topo.start_backends(&args.backend)?;
    println!("    both answer on their namespace addresses");
    check()?;

    s.step("Starting ebpf-lb in the node namespace: XDP lb_xdp on n0 (native), HTTP on :80");
    println!(
        "    ebpf-lb run --manifests {} --iface {NODE_IFACE} --vip {VIP} --http-listen 0.0.0.0:80 \\\n        --admin-listen {ADMIN} --xdp-mode native --bpffs {}",
        args.manifests.display(),
        args.bpffs.display()
    );
    topo.start_daemon(&args.ebpf_lb, &args.manifests, "native", Stdio::inherit())?;
    let link = run(topo.node.command("ip").args(["link", "show", NODE_IFACE]))?;
    let link = String::from_utf8_lossy(&link.stdout);
    if let Some(line) = link.lines().find(|l| l.contains("xdp")) {
        println!("    ip link: {}", line.trim());
    }
    println!("    /readyz answered: ready");
    check()?;

    s.step("Routes the daemon serves (ebpf-lb routes)");
    let routes = run(Command::new(&args.ebpf_lb)
        .arg("routes")
        .arg("--manifests")
        .arg(&args.manifests))?;
    print!("{}", indent(&String::from_utf8_lossy(&routes.stdout)));

    for (path, what) in [
        (
            "/financial-inference/v2/models/fraud-detector/infer",
            "the model server",
        ),
        ("/mlflow/api/2.0/mlflow/experiments/search", "MLflow"),
        ("/no-such-route", "nothing (expect 404)"),
    ] {
        s.step(&format!(
            "curl http://{VIP}{path}  from the client namespace -> {what}"
        ));
        let (status, body) = topo.curl_vip(path)?;
        println!("    HTTP {status}");
        print!("{}", indent(&body));
        check()?;
    }

    s.step(&format!(
        "Kernel counters for the VIP: bpftool map dump pinned {}/STATS (row 0)",
        args.bpffs.display()
    ));
    // Let the connections' last FIN/ACK packets land before reading.
    std::thread::sleep(Duration::from_millis(300));
    let dump = topo.bpftool_dump("STATS", false)?;
    // Row 0 only: the lines before the second entry's key.
    let row0: Vec<&str> = dump
        .lines()
        .take_while(|l| !l.contains("\"key\": 1"))
        .collect();
    let row0 = row0
        .get(..row0.len().saturating_sub(1))
        .unwrap_or_default()
        .join("\n");
    println!(
        "{}\n    }} ... (one row per VIP and reason)",
        indent(&row0).trim_end()
    );
    s.step(&format!(
        "The same through ebpf-lb maps --bpffs {}",
        args.bpffs.display()
    ));
    let maps = run(Command::new(&args.ebpf_lb)
        .arg("maps")
        .arg("--bpffs")
        .arg(&args.bpffs))?;
    print!("{}", indent(&String::from_utf8_lossy(&maps.stdout)));

    if args.hold {
        s.step("Holding: try `nsenter --net=/run/netns/lbdemo-client curl http://198.18.0.210/mlflow`; Ctrl-C ends");
        while !interrupted.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    s.step("Stopping ebpf-lb (SIGTERM: drain, detach XDP) and removing the topology");
    if let Some(mut d) = topo.daemon.take() {
        match d.signal_and_wait(libc::SIGTERM, Duration::from_secs(15)) {
            Some(st) if st.success() => println!("    ebpf-lb exited cleanly"),
            Some(st) => println!("    ebpf-lb exited: {st}"),
            None => println!("    ebpf-lb did not exit in 15 s; killed"),
        }
    }
    drop(topo);
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
