//! Kernel policy after start-up, over namespaces with real XDP: a denylist added to
//! ConfigMap `ebpf-lb` while the daemon runs drops the client in XDP (counted as drop_acl);
//! removing it lets the client back; a client that keeps exceeding an Ingress's L7
//! limit-rps is put into the XDP penalty box (`PENALTY`, counted as drop_penalty). Before
//! that, with `syn-cookie-threshold` set, new connections over the threshold are answered
//! with SYN cookies from XDP and still complete against the proxy.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tests::{
    local::TempDir,
    netns::{is_root, run},
    topology::{DemoTopology, VIP},
    wait::wait_until,
};

fn configmap(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ebpf-lb, namespace: ebpf-lb}}\ndata:\n{data}"
    )
}

const LIMITED: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limited
  namespace: mlflow
  annotations: {nginx.ingress.kubernetes.io/limit-rps: "1", nginx.ingress.kubernetes.io/limit-burst-multiplier: "1"}
spec:
  ingressClassName: ebpf-lb
  rules:
  - http: {paths: [{path: /limited, pathType: Prefix, backend: {service: {name: mlflow, port: {number: 5000}}}}]}
"#;

/// A counter of `ebpf_lb_xdp_packets_total` for the VIP's port 80 and `reason`.
fn xdp_packets(topo: &DemoTopology, reason: &str) -> u64 {
    let metrics = topo
        .curl_from(&topo.node, "http://127.0.0.1:10254/metrics")
        .unwrap_or_default();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("ebpf_lb_xdp_packets_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn reachable(topo: &DemoTopology) -> bool {
    run(topo.client.command("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "--max-time",
        "1",
        &format!("http://{VIP}/mlflow"),
    ]))
    .is_ok()
}

#[test]
fn configmap_denylist_and_l7_abuse_reach_the_kernel() {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces and XDP (CI runs as root)");
        return;
    }
    let backend = PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"));
    let ebpf_lb = tests::local::ebpf_lb_bin(&backend);
    let dir = TempDir::new("e2e-policy");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    for f in ["ingress.yaml", "services.yaml"] {
        dir.write(
            f,
            &std::fs::read_to_string(demo.join(f)).expect("demo manifests"),
        );
    }
    dir.write(
        "configmap.yaml",
        &configmap("  penalty-seconds: \"60\"\n  syn-cookie-threshold: \"1\"\n"),
    );
    let pid = std::process::id();
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/ebpf-lb-policy-{pid}"));
    let mut topo = DemoTopology::create(&format!("lbpol{pid}"), &bpffs).expect("topology");
    topo.start_backends(&backend).expect("backends");
    // XDP SYN cookies need the kernel to accept cookie ACKs unconditionally (the node's
    // namespace only), and the client's veth must take the XDP_TX'd SYN-ACKs.
    topo.node
        .sysctl("net.ipv4.tcp_syncookies", "2")
        .expect("sysctl");
    topo.attach_client_pass(lb_userspace::dataplane::object::bytes())
        .expect("pass program on the client");
    topo.start_daemon(&ebpf_lb, &dir.0, "native", Stdio::inherit())
        .expect("daemon");
    assert!(reachable(&topo));

    // SYN cookies: a threshold of 1 SYN/s, 20 new connections in a row (bounded: 2 s each).
    // Those over the threshold get their SYN-ACK from XDP; every one must complete.
    let out = run(topo.client.command("bash").args([
        "-c",
        &format!(
            "for i in $(seq 1 20); do curl -sS -o /dev/null -w '%{{http_code}}\\n' \
             --max-time 2 http://{VIP}/mlflow; done"
        ),
    ]))
    .expect("curl loop");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().filter(|l| *l == "200").count(),
        20,
        "every connection completes:\n{codes}"
    );
    let (sent, accepted) = (
        xdp_packets(&topo, "syncookie_sent"),
        xdp_packets(&topo, "syncookie_accepted"),
    );
    assert!(
        sent > 0,
        "SYN cookies sent from XDP; CONFIG: {:?}\nSYN_RATE: {:?}",
        topo.bpftool_dump("CONFIG", false),
        topo.bpftool_dump("SYN_RATE", false)
    );
    eprintln!("SYN cookies: {sent} sent from XDP, {accepted} admitted; 20 of 20 completed");
    assert!(
        accepted > 0 && accepted <= sent,
        "cookie ACKs admitted: {accepted} of {sent}"
    );

    // Deny the client's address at run time: XDP drops it.
    dir.write(
        "configmap.yaml",
        &configmap("  penalty-seconds: \"60\"\n  denylist-source-range: \"198.18.0.1/32\"\n"),
    );
    wait_until(Duration::from_secs(10), || {
        (!reachable(&topo)).then_some(())
    })
    .expect("denied in XDP");
    assert!(
        xdp_packets(&topo, "drop_acl") > 0,
        "drops counted as drop_acl"
    );
    dir.write("configmap.yaml", &configmap("  penalty-seconds: \"60\"\n"));
    wait_until(Duration::from_secs(10), || reachable(&topo).then_some(())).expect("allowed again");

    // L7 abuse escalates to the penalty box: 1 rps with a burst of 1, hammered.
    dir.write("limited.yaml", LIMITED);
    wait_until(Duration::from_secs(10), || {
        let out = run(topo.client.command("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            &format!("http://{VIP}/limited"),
        ]))
        .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
    })
    .expect("limited route serves");
    // 30 quick requests over one connection: the first may pass, the rest are 503s, and
    // after 20 refusals in a row the source is reported; later packets never reach the
    // proxy. Bounded to 10 s in all (requests after the penalty only time out).
    let _ = run(topo.client.command("timeout").args([
        "10",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "--max-time",
        "1",
        "--connect-timeout",
        "1",
        &format!("http://{VIP}/limited?i=[1-30]"),
    ]));
    wait_until(Duration::from_secs(10), || {
        (!reachable(&topo)).then_some(())
    })
    .expect("penalized in XDP");
    assert!(
        xdp_packets(&topo, "drop_penalty") > 0,
        "drops counted as drop_penalty"
    );
    let penalty = topo
        .bpftool_dump("PENALTY", false)
        .expect("bpftool PENALTY");
    assert!(
        penalty.contains("198") || penalty.contains("0xc6"),
        "client in the penalty box:\n{penalty}"
    );
}
