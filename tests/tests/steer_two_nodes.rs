//! Steering between two proxy nodes over real namespaces (topology in `tests::twonode`):
//! a flow Maglev gives node 2 reaches node 2's proxy through node 1's `lb_xdp` (IPIP) and
//! node 2's `lb_tc_decap`, and node 2 answers the client directly; 50 connections spread
//! over both nodes exactly as the Maglev table predicts; a long transfer steered to node 2
//! survives node 1's daemon being killed (SIGKILL) and stopped (SIGTERM) and restarted;
//! with the nodes' addresses on a separate node network, node 1 redirects steered frames
//! out of that network's interface (XDP_REDIRECT) and node 2 decapsulates them there.
//!
//! Needs root; skips with a message otherwise.
use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aya::maps::Array;
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    Counter, FLOWS, FlowKey, FlowValue, NODE_REDIRECT, NODES, NodeInfo, PROTO_TCP, Reason, STATS,
    maglev_slot,
};
use lb_userspace::dataplane::{
    self,
    steering::{self, NodeRecord},
};
use tests::{
    netns::{is_root, run},
    twonode::{BACKEND, CLIENT, NODE_IPS, NODE_NET_IPS, TwoNodes, VIP, curl},
    wait::wait_until,
    xdp::flow_key,
};

fn bins() -> (PathBuf, PathBuf) {
    let backend = PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"));
    (tests::local::ebpf_lb_bin(&backend), backend)
}

/// Manifests for node `n`: `/` goes to the echo backend named after the node, so the
/// answer says which node's proxy served it; `/big` goes to the bulk server.
fn manifests(dir: &Path, n: usize) {
    let port = 9001 + n;
    let yaml = format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: steer, namespace: t}}
spec:
  ingressClassName: ebpf-lb
  rules:
    - http:
        paths:
          - {{path: /big, pathType: Prefix, backend: {{service: {{name: big, port: {{number: 80}}}}}}}}
          - {{path: /, pathType: Prefix, backend: {{service: {{name: who, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: who, namespace: t}}
spec: {{ports: [{{port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: who-1, namespace: t, labels: {{kubernetes.io/service-name: who}}}}
addressType: IPv4
ports: [{{port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["{BACKEND}"], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: big, namespace: t}}
spec: {{ports: [{{port: 80, targetPort: 9100}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: big-1, namespace: t, labels: {{kubernetes.io/service-name: big}}}}
addressType: IPv4
ports: [{{port: 9100, protocol: TCP}}]
endpoints: [{{addresses: ["{BACKEND}"], conditions: {{ready: true}}}}]
"#
    );
    std::fs::create_dir_all(dir).expect("manifest dir");
    std::fs::write(dir.join("steer.yaml"), yaml).expect("write manifests");
}

/// The node (0 or 1) the shared Maglev table gives client port `port`, both nodes healthy.
fn predicted_node(table: &[u32], port: u16) -> usize {
    let key = flow_key(&format!("{CLIENT}:{port}"), &format!("{VIP}:80"), PROTO_TCP);
    table[maglev_slot(&key) as usize] as usize
}

fn both_nodes_table(node_ips: [&str; 2]) -> Vec<u32> {
    let nodes: Vec<Option<NodeRecord>> = node_ips
        .iter()
        .map(|ip| {
            Some(NodeRecord {
                mac: Some([2, 0, 0, 0, 0, 1]),
                healthy: true,
                ..NodeRecord::new(ip.parse().expect("ip"), false)
            })
        })
        .collect();
    steering::table(&nodes).expect("table")
}

fn counter(topo: &TwoNodes, node: usize, reason: Reason) -> u64 {
    let m = MapData::from_pin(topo.bpffs[node].0.join(STATS)).expect("STATS pin");
    let stats: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(m)).expect("STATS type");
    // VIP id 0: 198.18.0.210:80/tcp (the only VIP:port).
    stats
        .get(&reason.index(0), 0)
        .expect("read STATS")
        .iter()
        .map(|c| c.packets)
        .sum()
}

fn flow_entry(topo: &TwoNodes, node: usize, key: &FlowKey) -> Option<FlowValue> {
    let m = MapData::from_pin(topo.bpffs[node].0.join(FLOWS)).ok()?;
    let flows: HashMap<MapData, FlowKey, FlowValue> = HashMap::try_from(Map::LruHashMap(m)).ok()?;
    flows.get(key, 0).ok()
}

fn setup(prefix: &str) -> (TwoNodes, PathBuf, tempdirs::Dirs) {
    setup_with(prefix, false)
}

/// [`setup`], with the node network of [`TwoNodes::add_node_network`] when `node_net`.
fn setup_with(prefix: &str, node_net: bool) -> (TwoNodes, PathBuf, tempdirs::Dirs) {
    let (ebpf_lb, backend) = bins();
    let mut topo = TwoNodes::create(prefix).expect("topology");
    topo.attach_pass_programs(dataplane::object::bytes())
        .expect("lb_xdp_pass on the bridge ports");
    if node_net {
        topo.add_node_network(dataplane::object::bytes())
            .expect("node network");
    }
    topo.start_backend(&backend, 9001, "node1")
        .expect("backend");
    topo.start_backend(&backend, 9002, "node2")
        .expect("backend");
    let dirs = tempdirs::Dirs::new(prefix);
    for n in 0..2 {
        manifests(&dirs.node(n), n);
        topo.start_daemon(n, &ebpf_lb, &dirs.node(n))
            .expect("daemon");
    }
    // Both nodes see each other healthy: node 1's live table holds both.
    let both = wait_until(Duration::from_secs(20), || {
        (topo.maglev_nodes(0).ok()? == [0, 1] && topo.maglev_nodes(1).ok()? == [0, 1]).then_some(())
    });
    assert!(
        both.is_some(),
        "Maglev tables never held both nodes: {:?} / {:?}",
        topo.maglev_nodes(0),
        topo.maglev_nodes(1)
    );
    (topo, ebpf_lb, dirs)
}

/// Temporary manifest directories, removed on drop.
mod tempdirs {
    use std::path::PathBuf;

    pub struct Dirs(PathBuf);

    impl Dirs {
        pub fn new(prefix: &str) -> Self {
            Self(std::env::temp_dir().join(format!("{prefix}-{}", std::process::id())))
        }

        pub fn node(&self, n: usize) -> PathBuf {
            self.0.join(format!("n{}", n + 1))
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn flows_hashed_to_node_2_are_served_by_node_2_with_direct_return() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and XDP (CI runs as root)");
        return;
    }
    let (topo, _bin, _dirs) = setup("lbsteer");
    let table = both_nodes_table(NODE_IPS);
    let port = (42000u16..43000)
        .find(|p| predicted_node(&table, *p) == 1)
        .expect("a port Maglev gives node 2");
    let steered_before = counter(&topo, 0, Reason::SteeredRemote);
    let body = curl(
        &topo.client,
        &format!("http://{VIP}/who"),
        &["--local-port", &port.to_string()],
    )
    .expect("curl through node 1 to node 2");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["backend"], "node2", "{body}");
    assert_eq!(
        json["x_forwarded_for"], CLIENT,
        "the proxy saw the client's own address"
    );
    assert!(counter(&topo, 0, Reason::SteeredRemote) > steered_before);
    assert!(counter(&topo, 1, Reason::Decapsulated) > 0);
    // Direct return: node 2 answered from the VIP without passing node 1's proxy, and node 1
    // never saw the reply (its XDP only sees client->VIP packets, all steered).
    assert_eq!(
        counter(&topo, 0, Reason::PassLocal),
        0,
        "node 1 served nothing locally"
    );

    // 50 connections: each lands where the shared table says; both nodes serve some.
    let mut served = [0usize; 2];
    for port in 43000u16..43050 {
        let want = predicted_node(&table, port);
        let body = curl(
            &topo.client,
            &format!("http://{VIP}/who"),
            &["--local-port", &port.to_string()],
        )
        .unwrap_or_else(|e| panic!("connection from port {port}: {e}"));
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["backend"], format!("node{}", want + 1), "port {port}");
        served[want] += 1;
    }
    eprintln!("50 connections: node1 {} node2 {}", served[0], served[1]);
    assert!(served[0] > 0 && served[1] > 0, "{served:?}");
}

fn node_entry(topo: &TwoNodes, node: usize, index: u32) -> NodeInfo {
    let m = MapData::from_pin(topo.bpffs[node].0.join(NODES)).expect("NODES pin");
    let nodes: Array<MapData, NodeInfo> = Array::try_from(Map::Array(m)).expect("NODES type");
    nodes.get(&index, 0).expect("read NODES")
}

/// The nodes reach each other over a separate network (`b9`, 198.19.0.0/24), not over
/// `n0` where `lb_xdp` runs: node 1 flags node 2 `NODE_REDIRECT` and its steered frames
/// leave by `b9` (XDP_REDIRECT), where node 2's `lb_tc_decap` (attached to the interface of
/// its `--node-ip`) strips them; node 2 still answers the client directly over `n0`.
#[test]
fn steered_frames_leave_by_the_node_network_interface() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and XDP (CI runs as root)");
        return;
    }
    let (topo, ebpf_lb, _dirs) = setup_with("lbredir", true);
    // Slots follow address order: 198.19.0.11 is 0, 198.19.0.12 is 1.
    let peer = node_entry(&topo, 0, 1);
    assert_ne!(
        peer.flags & NODE_REDIRECT,
        0,
        "node 2 is behind b9 from node 1: {peer:?}"
    );
    assert_eq!(node_entry(&topo, 0, 0).flags & NODE_REDIRECT, 0);
    // The operator's view names the interface (ebpf-lb maps, in node 1's namespace).
    let out = run(topo.nodes[0]
        .command(&ebpf_lb)
        .arg("maps")
        .arg("--bpffs")
        .arg(&topo.bpffs[0].0))
    .expect("ebpf-lb maps");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("198.19.0.12") && l.contains("redirect via b9 from")),
        "{text}"
    );
    let table = both_nodes_table(NODE_NET_IPS);
    let b9_before = topo.rx_packets(1, "b9").expect("b9 counters");
    let steered_before = counter(&topo, 0, Reason::SteeredRemote);
    let mut served = [0usize; 2];
    for port in 44000u16..44030 {
        let want = predicted_node(&table, port);
        let body = curl(
            &topo.client,
            &format!("http://{VIP}/who"),
            &["--local-port", &port.to_string()],
        )
        .unwrap_or_else(|e| {
            panic!(
                "connection from port {port} (to node {}): {e}; node 1 steered {}, node 2 got {:?} on b9 and decapsulated {}",
                want + 1,
                counter(&topo, 0, Reason::SteeredRemote) - steered_before,
                topo.rx_packets(1, "b9").map(|n| n - b9_before),
                counter(&topo, 1, Reason::Decapsulated)
            )
        });
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["backend"], format!("node{}", want + 1), "port {port}");
        assert_eq!(json["x_forwarded_for"], CLIENT, "port {port}");
        served[want] += 1;
    }
    eprintln!("30 connections: node1 {} node2 {}", served[0], served[1]);
    assert!(served[1] > 0, "some flows hash to node 2: {served:?}");
    let steered = counter(&topo, 0, Reason::SteeredRemote) - steered_before;
    let b9_rx = topo.rx_packets(1, "b9").expect("b9 counters") - b9_before;
    // Each flow to node 2 is at least SYN, request, ACKs and FIN from the client.
    assert!(
        steered >= 3 * served[1] as u64,
        "{steered} packets steered for {} flows",
        served[1]
    );
    assert!(
        b9_rx >= steered,
        "node 2 received {b9_rx} packets on b9, node 1 steered {steered}"
    );
    assert!(counter(&topo, 1, Reason::Decapsulated) >= steered);
}

/// A bulk HTTP server inside the backend namespace: answers any request with `len` bytes.
fn start_bulk_server(topo: &TwoNodes, len: usize) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let ns = std::fs::File::open(topo.backend.path()).expect("backend netns");
    let listener = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace fd.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        TcpListener::bind((BACKEND, 9100)).expect("bind bulk server")
    })
    .join()
    .expect("bind thread");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        // Bounded: stops when the test ends, at most 10 minutes.
        let end = std::time::Instant::now() + Duration::from_secs(600);
        while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < end {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    stop
}

#[test]
fn a_long_transfer_survives_restarts_of_the_steering_node() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and XDP (CI runs as root)");
        return;
    }
    let (mut topo, ebpf_lb, dirs) = setup("lbrestart");
    let stop = start_bulk_server(&topo, 12 << 20);
    let table = both_nodes_table(NODE_IPS);
    let port = (44000u16..45000)
        .find(|p| predicted_node(&table, *p) == 1)
        .expect("a port Maglev gives node 2");
    // 12 MiB at 1 MiB/s: about 12 s, long enough for two restarts of node 1's daemon.
    let mut transfer = topo
        .client
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "60", "--limit-rate", "1M"])
        .args(["-o", "/dev/null", "-w", "%{size_download}", "--local-port"])
        .arg(port.to_string())
        .arg(format!("http://{VIP}/big"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start curl");
    let key = flow_key(&format!("{CLIENT}:{port}"), &format!("{VIP}:80"), PROTO_TCP);
    wait_until(Duration::from_secs(5), || flow_entry(&topo, 0, &key))
        .expect("node 1 remembers the flow");

    for signal in [libc::SIGKILL, libc::SIGTERM] {
        let mut d = topo.daemons[0].take().expect("daemon");
        d.signal_and_wait(signal, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("daemon did not exit on signal {signal}"));
        // Still attached (pinned link) while no daemon runs.
        let link = run(topo.nodes[0].command("ip").args(["link", "show", "n0"])).expect("ip link");
        assert!(
            String::from_utf8_lossy(&link.stdout).contains("xdp"),
            "XDP detached after signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(500));
        topo.start_daemon(0, &ebpf_lb, &dirs.node(0))
            .expect("restart");
        // Steering is back to both nodes (and the daemon has had time to install its
        // signal handlers before the next signal).
        wait_until(Duration::from_secs(10), || {
            (topo.maglev_nodes(0).ok()? == [0, 1]).then_some(())
        })
        .expect("node 1 republished both nodes after restart");
        assert_eq!(
            flow_entry(&topo, 0, &key).map(|v| v.node),
            Some(1),
            "the flow still goes to node 2 after restart (signal {signal})"
        );
    }
    assert!(
        matches!(transfer.try_wait(), Ok(None)),
        "the transfer ended before both restarts were done: the test proves nothing"
    );
    let out = transfer.wait_with_output().expect("curl");
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "transfer failed: {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (12u64 << 20).to_string()
    );
}
