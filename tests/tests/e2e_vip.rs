//! End to end through the VIP: a client namespace curls 198.18.0.210, `lb_xdp` (native mode
//! on the node's veth) counts the packets, `ebpf-lb` routes by path to two backend
//! namespaces, and the counters are read back with `ebpf-lb maps` and bpftool.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    netns::{is_root, run},
    topology::{CLIENT_ADDR, DemoTopology, NODE_IFACE, VIP},
    wait::wait_until,
};

fn bins() -> (PathBuf, PathBuf) {
    let backend = PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"));
    (tests::local::ebpf_lb_bin(&backend), backend)
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo")
}

/// Packets counted for the demo VIP (id 0, reason pass_local), from bpftool's JSON dump
/// of the per-CPU STATS array.
fn bpftool_vip_packets(topo: &DemoTopology) -> u64 {
    let text = topo
        .bpftool_dump("STATS", true)
        .expect("bpftool dump STATS");
    let rows: serde_json::Value = serde_json::from_str(&text).expect("bpftool JSON");
    // With BTF, bpftool adds a "formatted" object with field names beside the raw bytes.
    let row = rows
        .as_array()
        .and_then(|r| r.iter().map(|e| &e["formatted"]).find(|f| f["key"] == 0))
        .expect("STATS row 0 (formatted)");
    row["values"]
        .as_array()
        .expect("per-CPU values")
        .iter()
        .map(|v| v["value"]["packets"].as_u64().expect("packets field (BTF)"))
        .sum()
}

fn maps_output(ebpf_lb: &Path, topo: &DemoTopology) -> String {
    let out = run(Command::new(ebpf_lb)
        .arg("maps")
        .arg("--bpffs")
        .arg(&topo.bpffs.0))
    .expect("ebpf-lb maps");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_through_the_vip_is_routed_and_counted() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and XDP (CI runs as root)");
        return;
    }
    let (ebpf_lb, backend) = bins();
    let pid = std::process::id();
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/ebpf-lb-e2e-{pid}"));
    let mut topo = DemoTopology::create(&format!("lbe2e{pid}"), &bpffs).expect("topology");
    topo.start_backends(&backend).expect("backends");
    topo.start_daemon(&ebpf_lb, &manifests(), "native", Stdio::inherit())
        .expect("daemon");

    // XDP is attached in native (driver) mode on the node's veth.
    let link = run(topo
        .node
        .command("ip")
        .args(["-d", "link", "show", NODE_IFACE]))
    .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("xdp") && link.contains("lb_xdp"),
        "lb_xdp not attached: {link}"
    );

    // Routed by path to the right backend, with forwarding headers.
    let (status, body) = topo
        .curl_vip("/financial-inference/v2/models/fraud/infer?x=1")
        .expect("curl");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("backend JSON");
    assert_eq!(json["backend"], "model-server");
    assert_eq!(json["path"], "/financial-inference/v2/models/fraud/infer");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["x_forwarded_for"], CLIENT_ADDR);
    assert_eq!(json["host"], VIP);

    let (status, body) = topo
        .curl_vip("/mlflow/api/2.0/mlflow/experiments/list")
        .expect("curl");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("backend JSON");
    assert_eq!(json["backend"], "mlflow");

    let (status, _) = topo.curl_vip("/not-routed").expect("curl");
    assert_eq!(status, 404);

    // Three connections to the VIP: each is at least SYN, ACK, request, FIN (4 packets).
    let settled = |topo: &DemoTopology| {
        let mut last = bpftool_vip_packets(topo);
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(200));
            let now = bpftool_vip_packets(topo);
            let stable = now == last;
            last = now;
            stable.then_some(now)
        })
        .expect("counters settle")
    };
    let counted = settled(&topo);
    assert!(counted >= 12, "VIP packets counted: {counted}");

    // `ebpf-lb maps` agrees with bpftool.
    let maps = maps_output(&ebpf_lb, &topo);
    let line = maps
        .lines()
        .find(|l| l.contains("198.18.0.210:80/tcp") && l.contains("pass_local"))
        .unwrap_or_else(|| panic!("VIP row missing in:\n{maps}"));
    let packets: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .expect("packets column");
    assert_eq!(packets, counted, "{maps}");

    // The same counters on /metrics (read from the pinned maps at scrape time).
    let metrics = topo
        .curl_from(&topo.node, "http://127.0.0.1:10254/metrics")
        .expect("scrape");
    let series = metrics
        .lines()
        .find(|l| {
            l.starts_with("ebpf_lb_xdp_packets_total{")
                && l.contains("vip=\"198.18.0.210:80/tcp\"")
                && l.contains("reason=\"pass_local\"")
        })
        .unwrap_or_else(|| panic!("XDP series missing:\n{metrics}"));
    let scraped: u64 = series
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(scraped >= counted, "{series} vs {counted}");

    // bpftool prints field names (the maps carry BTF).
    let text = topo.bpftool_dump("STATS", false).expect("bpftool");
    assert!(text.contains("packets") && text.contains("bytes"), "{text}");

    // Traffic to a non-VIP address of the same node is not counted.
    let (status, _) = {
        let out = run(topo.client.command("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "http://198.18.0.2/mlflow",
        ]))
        .expect("curl node address");
        (String::from_utf8_lossy(&out.stdout).into_owned(), ())
    };
    assert_eq!(status, "200");
    assert_eq!(settled(&topo), counted, "non-VIP traffic was counted");

    // SIGTERM: the daemon exits cleanly and XDP is detached.
    let mut daemon = topo.daemon.take().expect("daemon");
    let status = daemon
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(15))
        .expect("daemon exits");
    assert!(status.success(), "daemon exit: {status}");
    let link = run(topo.node.command("ip").args(["link", "show", NODE_IFACE])).expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after SIGTERM: {link}"
    );
}
