//! The files provider under continuous traffic: Ingresses added, changed, broken and removed
//! while a client keeps requesting a stable route; not one request may fail, and each change
//! must serve traffic within 1 s (asserted with a generous deadline; the measured latency is a
//! benchmark figure, see `cargo xtask bench control`).
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    local::{LocalLb, TempDir, ebpf_lb_bin, fetch, start_backend},
    wait::wait_until,
};

fn objects(name: &str, port: u16) -> String {
    tests::local::loopback_service("ml", name, port)
}

fn ingress(name: &str, path: &str, svc: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: ml}}
spec:
  ingressClassName: ebpf-lb
  rules:
  - http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}
"#
    )
}

/// `ebpf_lb_route_tables_published_total` from /metrics.
fn published(lb: &LocalLb) -> u64 {
    let metrics = tests::local::curl(&[&lb.admin_url("/metrics")]).expect("scrape");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("ebpf_lb_route_tables_published_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("published counter")
}

fn backend_of(lb: &LocalLb, path: &str) -> Option<String> {
    let (status, _, body) = fetch(&[&lb.url(path)]);
    if status != 200 {
        return None;
    }
    let j: serde_json::Value = serde_json::from_str(&body).ok()?;
    j["backend"].as_str().map(str::to_owned)
}

#[test]
fn changes_apply_under_continuous_traffic_without_failures() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"));
    let (_a, pa) = start_backend(&bin, "a");
    let (_b, pb) = start_backend(&bin, "b");
    let dir = TempDir::new("files-provider");
    dir.write(
        "services.yaml",
        &(objects("a", pa) + "---\n" + &objects("b", pb)),
    );
    dir.write("stable.yaml", &ingress("stable", "/stable", "a"));
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    // A client hammering the stable route for the whole test: bounded (3000 requests,
    // 120 s), keep-alive, every status code recorded.
    let load = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
        ])
        .arg(lb.url("/stable?i=[1-3000]"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl load");

    let deadline = Duration::from_secs(5);
    // Add.
    dir.write("new.yaml", &ingress("new", "/new", "b"));
    wait_until(deadline, || backend_of(&lb, "/new").filter(|b| b == "b"))
        .expect("added route serves");
    // Change the backend.
    dir.write("new.yaml", &ingress("new", "/new", "a"));
    wait_until(deadline, || backend_of(&lb, "/new").filter(|b| b == "a"))
        .expect("changed route serves");
    // Half-written file: once the daemon has processed it (a new publish), the last good
    // version still serves.
    // (Written with a rename: a plain truncate-and-write could let the poller catch the
    // empty file in between, which is a valid file with no objects.)
    let before = published(&lb);
    dir.write(
        "new.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: new",
    );
    wait_until(deadline, || (published(&lb) > before).then_some(()))
        .expect("broken file processed");
    assert_eq!(
        backend_of(&lb, "/new").as_deref(),
        Some("a"),
        "last good version kept"
    );
    // Remove.
    std::fs::remove_file(dir.0.join("new.yaml")).expect("rm");
    wait_until(deadline, || {
        (backend_of(&lb, "/new").is_none()).then_some(())
    })
    .expect("removed route is gone");

    let out = load.wait_with_output().expect("curl load finishes");
    let codes = String::from_utf8_lossy(&out.stdout);
    let total = codes.lines().count();
    let failed: Vec<&str> = codes.lines().filter(|c| *c != "200").collect();
    assert_eq!(
        total,
        3000,
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failed.is_empty(),
        "{} of {total} requests failed during changes: {failed:?}",
        failed.len()
    );
}
