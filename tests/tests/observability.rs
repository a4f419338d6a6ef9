//! Metrics, access log, health and debug endpoints after real traffic through the daemon.
use std::{path::PathBuf, time::Duration};

use tests::{
    local::{LocalLb, TempDir, curl, ebpf_lb_bin, fetch, start_backend},
    wait::wait_until,
};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: model-tls, namespace: ml}
type: kubernetes.io/tls
stringData:
  tls.crt: |
TLSCRT
  tls.key: |
TLSKEY
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: ml}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: flaky-1, namespace: ml, labels: {kubernetes.io/service-name: flaky}}
addressType: IPv4
ports: [{name: http, port: V1PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: flaky-2, namespace: ml, labels: {kubernetes.io/service-name: flaky}}
addressType: IPv4
ports: [{name: http, port: DEADPORT}]
endpoints: [{addresses: ["127.0.0.2"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: flaky, namespace: ml, creationTimestamp: "2026-01-03T00:00:00Z"}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: flaky.company.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: flaky, port: {number: 80}}}}]}
---
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
metadata:
  name: model
  namespace: ml
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: "false"}
spec:
  ingressClassName: ebpf-lb
  tls: [{hosts: [ml-api.company.com], secretName: model-tls}]
  rules:
  - host: ml-api.company.com
    http: {paths: [{path: /predict, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: model-health
  namespace: ml
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {nginx.ingress.kubernetes.io/enable-access-log: "false", nginx.ingress.kubernetes.io/ssl-redirect: "false"}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: ml-api.company.com
    http: {paths: [{path: /health, pathType: Exact, backend: {service: {name: v1, port: {number: 80}}}}]}
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
    let (_, crt, key) = lb_userspace::tls::self_signed(&["ml-api.company.com"]).expect("cert");
    let indent = |pem: &str| -> String {
        pem.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Nothing listens there: connections are refused and the endpoint is ejected.
    let dead_port = tests::local::free_port();
    dir.write(
        "m.yaml",
        &MANIFESTS
            .replace("V1PORT", &p1.to_string())
            .replace("V2PORT", &p2.to_string())
            .replace("DEADPORT", &dead_port.to_string())
            .replace("TLSCRT", &indent(&crt))
            .replace("TLSKEY", &indent(&key)),
    );
    let log = dir.0.join("access.log");
    let log_arg = log.display().to_string();
    // One proxy worker: one per-thread upstream pool, so keep-alive reuse is deterministic.
    let lb = LocalLb::start_with(
        &ebpf_lb_bin(&bin),
        &dir.0,
        &["--access-log", &log_arg, "--proxy-workers", "1"],
    );

    let host = ["-H", "Host: ml-api.company.com"];
    for _ in 0..3 {
        let (status, _, _) = fetch(&[&host[..], &[&lb.url("/predict/fraud")]].concat());
        assert_eq!(status, 200);
    }
    // enable-access-log: "false": counted, not logged (asked before the canary request: a
    // line for it would come before the canary's, which the log is read for below).
    let (status, _, _) = fetch(&[&host[..], &[&lb.url("/health")]].concat());
    assert_eq!(status, 200);
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
    // Round robin over a live and a refusing endpoint: the refused attempt ejects the
    // dead one and the request is retried on the live one.
    for _ in 0..4 {
        let (status, _, _) = fetch(&["-H", "Host: flaky.company.com", &lb.url("/")]);
        assert_eq!(status, 200);
    }

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

    // Upstream connect time: observed once for the three keep-alive requests to v1 (one
    // new connection, then the pooled one), with the request labels.
    let connect = series(
        &metrics,
        "nginx_ingress_controller_connect_duration_seconds_count",
        &[
            "status=\"200\"",
            "method=\"GET\"",
            "path=\"/predict\"",
            "namespace=\"ml\"",
            "ingress=\"model\"",
            "service=\"v1\"",
            "canary=\"\"",
            "host=\"ml-api.company.com\"",
        ],
    );
    assert_eq!(value(connect), 1.0, "{connect}");
    assert!(metrics.contains("# TYPE nginx_ingress_controller_connect_duration_seconds histogram"));

    // The certificate served for spec.tls, with ingress-nginx's labels.
    let info = series(
        &metrics,
        "nginx_ingress_controller_ssl_certificate_info",
        &[
            "class=\"ebpf-lb.io/ingress-controller\"",
            "host=\"ml-api.company.com\"",
            "namespace=\"ml\"",
            "secret_name=\"model-tls\"",
            "issuer_common_name=\"rcgen self signed cert\"",
            "public_key_algorithm=\"ECDSA\"",
            "serial_number=\"",
            "identifier=\"-",
            "issuer_organization=\"",
        ],
    );
    assert_eq!(value(info), 1.0, "{info}");
    let expiry = series(
        &metrics,
        "nginx_ingress_controller_ssl_expire_time_seconds",
        &[
            "class=\"ebpf-lb.io/ingress-controller\"",
            "host=\"ml-api.company.com\"",
            "namespace=\"ml\"",
            "secret_name=\"model-tls\"",
        ],
    );
    // rcgen's self-signed certificates are valid until 4096-01-01.
    assert_eq!(value(expiry), 67_090_118_400.0, "{expiry}");

    // Passive ejection of the refusing endpoint, by Service (not by endpoint).
    let ejections = series(
        &metrics,
        "ebpf_lb_upstream_ejections_total",
        &["namespace=\"ml\"", "service=\"flaky\""],
    );
    assert!(value(ejections) >= 1.0, "{ejections}");
    let state = |s: &str| {
        value(series(
            &metrics,
            "ebpf_lb_upstream_endpoints",
            &[
                "namespace=\"ml\"",
                "service=\"flaky\"",
                &format!("state=\"{s}\""),
            ],
        ))
    };
    // Ejections last 1 s and more, so the scrape may or may not still see it ejected.
    assert_eq!(state("healthy") + state("ejected"), 2.0);
    assert_eq!(
        value(series(
            &metrics,
            "ebpf_lb_upstream_endpoints",
            &["service=\"v1\"", "state=\"healthy\""]
        )),
        1.0
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
    assert!(
        lines.iter().all(|l| l["path"] != "/health"),
        "a route with enable-access-log: false was logged: {lines:?}"
    );
    assert!(
        metrics.contains("ingress=\"model-health\""),
        "the unlogged route is still counted"
    );
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
    let model = routes
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["host"] == "ml-api.company.com" && r["path"] == "/predict")
        })
        .unwrap_or_else(|| panic!("ml-api.company.com/predict route in {routes}"));
    assert_eq!(model["canaries"][0]["backend"], "ml/v2:80");
    assert_eq!(curl(&[&lb.admin_url("/healthz")]).expect("healthz"), "ok\n");
}

/// The sample line of metric `name` carrying every label of `labels`.
fn series<'a>(metrics: &'a str, name: &str, labels: &[&str]) -> &'a str {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{metrics}"))
}

fn value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"))
}
