//! End to end through the VIP: a client namespace curls 198.18.0.210, `lb_xdp` (native mode
//! on the node's veth) counts the packets, `ebpf-lb` routes by path to two backend
//! namespaces, and the counters are read back with `ebpf-lb maps` and bpftool. Steering is
//! on over a one-node set (this node), so NODES, MAGLEV and FLOWS hold real entries; the
//! kernel state is checked in `ebpf-lb maps` and on /metrics against bpftool.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    netns::{is_root, run},
    procs::ChildGuard,
    topology::{CLIENT_ADDR, DemoTopology, NODE_IFACE, VIP},
    wait::wait_until,
};

/// The node's address on the client link: `--node-ip`, the only node of the set.
const NODE_ADDR: &str = "198.18.0.2";

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
        .arg(&topo.bpffs.0)
        .args(["--sample", "500"]))
    .expect("ebpf-lb maps");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// bpftool's JSON dump of a pinned map: the entries' BTF-formatted {key, value}.
fn bpftool_entries(topo: &DemoTopology, map: &str) -> Vec<serde_json::Value> {
    let text = topo.bpftool_dump(map, true).expect("bpftool dump");
    let rows: serde_json::Value = serde_json::from_str(&text).expect("bpftool JSON");
    rows.as_array()
        .expect("entries")
        .iter()
        .map(|e| e["formatted"].clone())
        .collect()
}

/// CLOCK_MONOTONIC in ns: what `bpf_ktime_get_ns` reads, so PENALTY/SOURCES times.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bpftool map update pinned <bpffs>/<map> key hex .. value hex ..`.
fn bpftool_update(topo: &DemoTopology, map: &str, key: &[u8], value: &[u8]) {
    run(Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(topo.bpffs.0.join(map))
        .arg("key")
        .arg("hex")
        .args(hex(key))
        .arg("value")
        .arg("hex")
        .args(hex(value)))
    .expect("bpftool map update");
}

/// A `SourceKey` for an IPv4 address: addr[16], family 4, 3 bytes of padding.
fn source_key(a: [u8; 4]) -> Vec<u8> {
    let mut k = vec![0u8; 20];
    k[..4].copy_from_slice(&a);
    k[16] = 4;
    k
}

/// The value at the end of the sample line of `name` with every one of `labels`.
fn metric(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .find(|l| {
            (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
                && labels.iter().all(|x| l.contains(x))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{metrics}"))
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
    topo.start_daemon_with(
        &ebpf_lb,
        &manifests(),
        "native",
        Stdio::inherit(),
        &["--node-ip", NODE_ADDR],
    )
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

    kernel_state_in_maps_and_metrics(&ebpf_lb, &topo);

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

/// A connection held open from the client, a rate-limit bucket and two penalty-box entries
/// (one live, one expired) written with bpftool: `ebpf-lb maps` and /metrics show them as
/// bpftool does, with the node set and Maglev table steering published.
fn kernel_state_in_maps_and_metrics(ebpf_lb: &Path, topo: &DemoTopology) {
    let held = topo
        .client
        .command("bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/{VIP}/80; sleep 30")])
        .stdin(Stdio::null())
        .spawn()
        .expect("hold a connection");
    let mut held = ChildGuard::new("held connection", held);
    let port: u16 = wait_until(Duration::from_secs(5), || {
        let out = run(topo.client.command("ss").args([
            "-Htn",
            "state",
            "established",
            "dst",
            &format!("{VIP}:80"),
        ]))
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Recv-Q Send-Q Local:Port Peer:Port
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{CLIENT_ADDR}:"))?.parse().ok())
    })
    .expect("held connection established");

    let now = monotonic_ns();
    let mut bucket = (now + 5_000_000_000).to_le_bytes().to_vec();
    bucket.extend_from_slice(&0u64.to_le_bytes());
    bpftool_update(topo, "SOURCES", &source_key([198, 18, 0, 97]), &bucket);
    bpftool_update(
        topo,
        "PENALTY",
        &source_key([198, 18, 0, 99]),
        &(now + 60_000_000_000).to_le_bytes(),
    );
    bpftool_update(
        topo,
        "PENALTY",
        &source_key([198, 18, 0, 98]),
        &1u64.to_le_bytes(),
    );

    let maps = maps_output(ebpf_lb, topo);
    // NODES: this node only, as bpftool shows.
    let nodes: Vec<_> = bpftool_entries(topo, "NODES")
        .into_iter()
        .filter(|e| e["value"]["flags"].as_u64().is_some_and(|f| f != 0))
        .collect();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(
        maps.lines()
            .any(|l| l.starts_with(&format!("0    {NODE_ADDR} ")) && l.ends_with("local,v4")),
        "NODES row missing:\n{maps}"
    );
    // MAGLEV: every slot of the live half is this node.
    let row = maps
        .lines()
        .find(|l| l.starts_with(&format!("0 {NODE_ADDR}")) && l.ends_with('%'))
        .unwrap_or_else(|| panic!("MAGLEV row missing:\n{maps}"));
    assert!(row.contains(" 65537 ") && row.ends_with("100.00%"), "{row}");
    // FLOWS: the held connection, on node 0; as many entries as bpftool lists.
    let flows = bpftool_entries(topo, "FLOWS");
    assert!(
        flows.iter().any(|e| e["key"]["sport"] == port
            && e["key"]["dport"] == 80
            && e["value"]["node"] == 0),
        "bpftool FLOWS has no {port} -> 80 on node 0: {flows:?}"
    );
    let flow = format!("{CLIENT_ADDR}:{port} -> {VIP}:80/tcp");
    assert!(
        maps.lines()
            .any(|l| l.starts_with(&flow) && l.ends_with(&format!("0 {NODE_ADDR}"))),
        "flow {flow} missing:\n{maps}"
    );
    assert!(
        maps.contains(&format!("FLOWS (flow table: {} entries;", flows.len())),
        "{} flows per bpftool:\n{maps}",
        flows.len()
    );
    // SOURCES: the bucket, 5 s ahead of now.
    let bucket = maps
        .lines()
        .find(|l| l.starts_with("198.18.0.97 "))
        .unwrap_or_else(|| panic!("SOURCES row missing:\n{maps}"));
    assert!(
        bucket.contains("+4.") || bucket.contains("+5.000"),
        "{bucket}"
    );
    // PENALTY: two entries, one still active with about a minute left.
    assert!(maps.contains("PENALTY (penalty box: 2 entries;"), "{maps}");
    assert!(maps.contains("1 active"), "{maps}");
    let left: f64 = maps
        .lines()
        .find(|l| l.starts_with("198.18.0.99 "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("PENALTY row missing:\n{maps}"));
    assert!((50.0..=60.0).contains(&left), "{left} s left");
    assert!(
        maps.lines()
            .any(|l| l.starts_with("198.18.0.98 ") && l.ends_with("expired")),
        "{maps}"
    );

    // The same state on /metrics, read from the pinned maps at scrape time.
    let metrics = topo
        .curl_from(&topo.node, "http://127.0.0.1:10254/metrics")
        .expect("scrape");
    let flows_now = bpftool_entries(topo, "FLOWS").len() as f64;
    let scraped = metric(&metrics, "ebpf_lb_flow_entries", &[]);
    assert!(scraped >= 1.0, "{scraped}");
    assert!(
        scraped == flows.len() as f64 || scraped == flows_now,
        "flows: scraped {scraped}, bpftool {} / {flows_now}",
        flows.len()
    );
    assert_eq!(metric(&metrics, "ebpf_lb_penalty_box_entries", &[]), 1.0);
    assert_eq!(
        metric(
            &metrics,
            "ebpf_lb_maglev_nodes",
            &[&format!("node=\"{NODE_ADDR}\"")]
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "ebpf_lb_maglev_rebuilds_total", &[]), 1.0);
    for reason in ["syncookie_sent", "syncookie_accepted", "drop_penalty"] {
        metric(
            &metrics,
            "ebpf_lb_xdp_packets_total",
            &[
                &format!("vip=\"{VIP}:80/tcp\""),
                &format!("reason=\"{reason}\""),
            ],
        );
    }
    let _ = held.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
}
