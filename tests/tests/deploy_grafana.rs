//! deploy/grafana/ebpf-lb.json: valid JSON, and every PromQL expression names only metric
//! series the daemon exports (from the real registry, plus the XDP collector's families) and
//! only `reason` values the kernel counts. A renamed metric fails here, not on a dashboard.
use std::collections::BTreeSet;

use lb_common::Reason;
use lb_userspace::metrics::{Metrics, RequestLabels, UpstreamLabels};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../deploy/grafana/ebpf-lb.json");
/// The XDP collector reads the pinned maps at scrape time, so its families are not in a
/// fresh registry; its source names them.
const XDP_COLLECTOR: &str = include_str!("../../lb-userspace/src/metrics/xdp.rs");
const XDP_FAMILIES: &[&str] = &["ebpf_lb_xdp_packets", "ebpf_lb_xdp_bytes"];

/// Series names a scrape can hold, from the `# TYPE` lines of the registry's exposition.
fn exported() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |name: &str, kind: &str| match kind {
        "counter" if name.ends_with("_total") => {
            out.insert(name.to_owned());
        }
        "counter" => {
            out.insert(format!("{name}_total"));
        }
        "histogram" => {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
        _ => {
            out.insert(name.to_owned());
        }
    };
    // Families without samples are not exposed: give each labelled family one sample.
    let metrics = Metrics::new();
    let labels = RequestLabels {
        status: "200".into(),
        method: "GET".into(),
        path: "/".into(),
        namespace: "ns".into(),
        ingress: "ing".into(),
        service: "svc".into(),
        canary: String::new(),
        host: "h".into(),
    };
    metrics.requests.get_or_create(&labels).0.inc();
    metrics.request_duration.get_or_create(&labels).observe(0.1);
    metrics.request_size.get_or_create(&labels).observe(1.0);
    metrics.response_size.get_or_create(&labels).observe(1.0);
    metrics
        .response_duration
        .get_or_create(&UpstreamLabels {
            method: "GET".into(),
            path: "/".into(),
            namespace: "ns".into(),
            ingress: "ing".into(),
            service: "svc".into(),
            canary: String::new(),
            host: "h".into(),
            status: "200".into(),
        })
        .observe(0.1);
    for line in metrics.encode().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split_whitespace();
            let (Some(name), Some(kind)) = (f.next(), f.next()) else {
                panic!("bad TYPE line {line:?}");
            };
            add(name, kind);
        }
    }
    for family in XDP_FAMILIES {
        assert!(
            XDP_COLLECTOR.contains(&format!("\"{family}\"")),
            "the XDP collector no longer exports {family}"
        );
        add(family, "counter");
    }
    out
}

/// Every PromQL string in the dashboard: panel targets and template variable queries.
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// Identifiers of an expression that name one of our metric families.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            cur.clear();
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            cur.push(c);
            continue;
        }
        if cur.starts_with("nginx_ingress_controller_") || cur.starts_with("ebpf_lb_") {
            names.push(cur.clone());
        }
        cur.clear();
    }
    names
}

/// Values matched against the `reason` label: `reason="x"` exactly, or `reason=~"re"`.
fn reason_matchers(expr: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("reason") {
        rest = &rest[i + "reason".len()..];
        let (regex, after) = if let Some(r) = rest.strip_prefix("=~\"") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("=\"") {
            (false, r)
        } else {
            continue;
        };
        let end = after.find('"').expect("closing quote");
        out.push((regex, after[..end].to_owned()));
        rest = &after[end..];
    }
    out
}

#[test]
fn dashboard_uses_only_exported_metrics_and_known_reasons() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("deploy/grafana/ebpf-lb.json is JSON");
    assert_eq!(dash["uid"], "ebpf-lb");
    let exported = exported();
    let mut exprs = Vec::new();
    expressions(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "only {} expressions found", exprs.len());
    let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "expression names no ebpf-lb metric: {e}");
        for n in names {
            assert!(
                exported.contains(&n),
                "{n} is not exported by ebpf-lb (exported: {exported:?})\n  in {e}"
            );
            used.insert(n);
        }
        for (regex, value) in reason_matchers(e) {
            let ok = if regex {
                let re = regex_lite(&value);
                reasons.iter().any(|r| re(r))
            } else {
                reasons.contains(&value.as_str())
            };
            assert!(
                ok,
                "reason {value:?} matches no kernel reason {reasons:?}\n  in {e}"
            );
        }
    }
    // The panels the dashboard promises.
    for must in [
        "nginx_ingress_controller_requests",
        "nginx_ingress_controller_request_duration_seconds_bucket",
        "nginx_ingress_controller_response_duration_seconds_bucket",
        "ebpf_lb_xdp_packets_total",
        "ebpf_lb_route_table_publish_duration_seconds_bucket",
    ] {
        assert!(used.contains(must), "no panel uses {must}");
    }
    // Every panel has a unique id and at least one query (rows excepted).
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate panel id"
        );
        if p["type"] != "row" {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                p["title"]
            );
        }
    }
}

/// The only regex form the dashboard uses for reasons: a literal prefix followed by `.*`.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |s: &str| match pattern.strip_suffix(".*") {
        Some(prefix) if !prefix.contains(['.', '*', '|', '(', '[']) => s.starts_with(prefix),
        _ => panic!("reason regex {pattern:?}: use a literal prefix with .*"),
    }
}
