//! Metrics, access log, health and debug endpoints after real traffic through the daemon.
use std::{path::PathBuf, time::Duration};

use tests::{
    local::{LocalLb, TempDir, curl, ebpf_lb_bin, fetch, start_backend},
    wait::wait_until,
};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: ml}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v1-1, namespace: ml, labels: {kubernetes.io/service-name: v1}}
addressType: IPv4
ports: [{name: http, port: V1PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: ml}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v2-1, namespace: ml, labels: {kubernetes.io/service-name: v2}}
addressType: IPv4
ports: [{name: http, port: V2PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: model, namespace: ml, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: ml-api.company.com
    http: {paths: [{path: /predict, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: model-canary
  namespace: ml
  creationTimestamp: "2026-01-02T00:00:00Z"
  annotations: {nginx.ingress.kubernetes.io/canary: "true", nginx.ingress.kubernetes.io/canary-by-header: X-Canary}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: ml-api.company.com
    http: {paths: [{path: /predict, pathType: Prefix, backend: {service: {name: v2, port: {number: 80}}}}]}
"#;

#[test]
fn metrics_access_log_and_debug_routes_after_traffic() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"));
    let (_v1, p1) = start_backend(&bin, "model-v1");
    let (_v2, p2) = start_backend(&bin, "model-v2");
    let dir = TempDir::new("observability");
    dir.write(
        "m.yaml",
        &MANIFESTS
            .replace("V1PORT", &p1.to_string())
            .replace("V2PORT", &p2.to_string()),
    );
    let log = dir.0.join("access.log");
    let log_arg = log.display().to_string();
    let lb = LocalLb::start_with(&ebpf_lb_bin(&bin), &dir.0, &["--access-log", &log_arg]);

    let host = ["-H", "Host: ml-api.company.com"];
    for _ in 0..3 {
        let (status, _, _) = fetch(&[&host[..], &[&lb.url("/predict/fraud")]].concat());
        assert_eq!(status, 200);
    }
    let (status, _, body) = fetch(
        &[
            &host[..],
            &[
                "-H",
                "X-Canary: always",
                "-H",
                "X-Request-ID: req-42",
                &lb.url("/predict/x"),
            ],
        ]
        .concat(),
    );
    assert_eq!(status, 200);
    assert!(body.contains("model-v2"));
    let (status, _, _) = fetch(&[&lb.url("/nothing-here")]);
    assert_eq!(status, 404);

    let metrics = curl(&[&lb.admin_url("/metrics")]).expect("scrape");
    // ingress-nginx's names and labels, exactly (no _total suffix on the request counter).
    let main = metrics
        .lines()
        .find(|l| {
            l.starts_with("nginx_ingress_controller_requests{")
                && l.contains("status=\"200\"")
                && l.contains("ingress=\"model\"")
                && l.contains("canary=\"\"")
        })
        .unwrap_or_else(|| panic!("main series missing:\n{metrics}"));
    assert!(main.ends_with(" 3"), "{main}");
    for label in [
        "method=\"GET\"",
        "path=\"/predict\"",
        "namespace=\"ml\"",
        "service=\"v1\"",
        "host=\"ml-api.company.com\"",
    ] {
        assert!(main.contains(label), "{label} in {main}");
    }
    let canary = metrics
        .lines()
        .find(|l| {
            l.starts_with("nginx_ingress_controller_requests{") && l.contains("canary=\"v2\"")
        })
        .unwrap_or_else(|| panic!("canary series missing:\n{metrics}"));
    assert!(
        canary.contains("service=\"v2\"") && canary.ends_with(" 1"),
        "{canary}"
    );
    assert!(
        metrics.contains("nginx_ingress_controller_requests{status=\"404\""),
        "404s are counted"
    );
    for family in [
        "# TYPE nginx_ingress_controller_request_duration_seconds histogram",
        "# TYPE nginx_ingress_controller_response_duration_seconds histogram",
        "# TYPE nginx_ingress_controller_request_size histogram",
        "# TYPE nginx_ingress_controller_response_size histogram",
        "nginx_ingress_controller_config_last_reload_successful 1",
        "nginx_ingress_controller_build_info{",
        "ebpf_lb_route_tables_published_total 1",
        "ebpf_lb_rejected_objects 0",
        "# TYPE ebpf_lb_route_table_publish_duration_seconds histogram",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(
        !metrics.contains("nginx_ingress_controller_requests_total"),
        "no _total suffix"
    );

    // One JSON line per request, written off the request path.
    let lines = wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() >= 5).then_some(lines)
    })
    .expect("5 access log lines");
    let canary_line = lines
        .iter()
        .find(|l| l["request_id"] == "req-42")
        .expect("canary request logged");
    assert_eq!(canary_line["status"], 200);
    assert_eq!(canary_line["path"], "/predict/x");
    assert_eq!(canary_line["service"], "v2");
    assert_eq!(canary_line["canary"], true);
    assert_eq!(canary_line["ingress"], "model");
    assert_eq!(canary_line["host"], "ml-api.company.com");
    assert_eq!(canary_line["client"], "127.0.0.1");
    assert_eq!(canary_line["upstream_addr"], format!("127.0.0.1:{p2}"));
    assert!(canary_line["bytes_out"].as_u64().is_some_and(|b| b > 0));
    assert!(
        canary_line["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let routes: serde_json::Value =
        serde_json::from_str(&curl(&[&lb.admin_url("/debug/routes")]).expect("debug routes"))
            .expect("JSON");
    assert_eq!(routes[0]["host"], "ml-api.company.com");
    assert_eq!(routes[0]["canaries"][0]["backend"], "ml/v2:80");
    assert_eq!(curl(&[&lb.admin_url("/healthz")]).expect("healthz"), "ok\n");
}
