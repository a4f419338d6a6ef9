//! Translation fixtures: YAML in, route table and diagnostics out.
use super::*;

fn snapshot(yaml: &str) -> Snapshot {
    crate::provider::files::fixture(yaml)
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: model, namespace: ml}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: model-abc, namespace: ml, labels: {kubernetes.io/service-name: model}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - addresses: ["198.18.1.2"]
    conditions: {ready: true}
  - addresses: ["198.18.1.3"]
    conditions: {ready: false}
  - addresses: ["198.18.1.4"]
---
apiVersion: v1
kind: Service
metadata: {name: mlflow, namespace: ml}
spec: {ports: [{port: 5000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mlflow-1, namespace: ml, labels: {kubernetes.io/service-name: mlflow}}
addressType: IPv4
ports: [{port: 5000}]
endpoints: [{addresses: ["198.18.2.2"]}]
"#;

fn ingress(name: &str, created: &str, class: &str, rules: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: ml, creationTimestamp: "{created}"}}
spec:
  ingressClassName: {class}
  rules:
{rules}
"#
    )
}

/// An Ingress `name` in `ml` with `annotations` (the inside of a YAML flow mapping)
/// sending every path of `host` to `service` port `port`.
fn annotated(
    name: &str,
    created: &str,
    annotations: &str,
    host: &str,
    service: &str,
    port: u16,
) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: ml
  creationTimestamp: "{created}"
  annotations: {{{annotations}}}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: "{host}"
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: {port}}}}}}}}}]}}
"#
    )
}

fn lookup(t: &Translation, host: &str, path: &str) -> Option<String> {
    t.routes
        .lookup(host, path)
        .map(|r| format!("{} {}", r.ingress, r.backend))
}

#[test]
fn routes_resolve_to_ready_endpoints() {
    let yaml = format!(
        "{SERVICES}{}",
        ingress(
            "api",
            "2026-01-01T00:00:00Z",
            "ebpf-lb",
            r#"
  - http:
      paths:
      - {path: /financial-inference, pathType: Prefix, backend: {service: {name: model, port: {name: http}}}}
      - {path: /mlflow, pathType: Prefix, backend: {service: {name: mlflow, port: {number: 5000}}}}"#,
        )
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let r = t
        .routes
        .lookup("anything", "/financial-inference/v2/models")
        .expect("route");
    assert_eq!(r.backend.to_string(), "ml/model:http");
    let eps: Vec<String> = r.backend.endpoints.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        eps,
        ["198.18.1.2:8080", "198.18.1.4:8080"],
        "not-ready endpoint left out"
    );
    let r = t.routes.lookup("x", "/mlflow").expect("route");
    assert_eq!(
        r.backend.endpoints,
        vec!["198.18.2.2:5000".parse().expect("addr")]
    );
    assert!(t.routes.lookup("x", "/other").is_none());
}

#[test]
fn other_classes_are_ignored() {
    let yaml = format!(
        "{SERVICES}{}",
        ingress(
            "nginx-one",
            "2026-01-01T00:00:00Z",
            "nginx",
            "  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}",
        )
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    assert!(t.accepted.is_empty());
    assert!(t.routes.lookup("x", "/").is_none());
}

#[test]
fn invalid_ingress_is_rejected_alone_with_field_paths() {
    let yaml = format!(
        "{SERVICES}{}{}",
        ingress(
            "good",
            "2026-01-01T00:00:00Z",
            "ebpf-lb",
            "  - http: {paths: [{path: /good, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}",
        ),
        ingress(
            "bad",
            "2026-01-02T00:00:00Z",
            "ebpf-lb",
            r#"
  - http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: model, port: {number: 9999}}}}
      - {path: /c, pathType: Fuzzy, backend: {service: {name: model, port: {number: 80}}}}
      - {path: relative, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}"#,
        )
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [
            "ml/bad: spec.rules[0].http.paths[0].backend.service.name: Service ml/missing not found (error)",
            "ml/bad: spec.rules[0].http.paths[1].backend.service.port: Service ml/model has no port 9999 (error)",
            "ml/bad: spec.rules[0].http.paths[2].pathType: \"Fuzzy\" is not one of Exact, Prefix, ImplementationSpecific (error)",
            "ml/bad: spec.rules[0].http.paths[3].path: \"relative\" must be an absolute path starting with '/' (error)",
        ]
    );
    assert!(t.has_errors());
    assert_eq!(t.rejected.len(), 1);
    assert!(
        lookup(&t, "x", "/good").is_some(),
        "the valid Ingress keeps serving"
    );
    assert!(lookup(&t, "x", "/a").is_none());
}

#[test]
fn oldest_ingress_wins_a_shared_path() {
    let rule = |svc: &str| {
        format!(
            "  - host: api.example.com\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}"
        )
    };
    let yaml = format!(
        "{SERVICES}{}{}",
        ingress("newer", "2026-03-01T00:00:00Z", "ebpf-lb", &rule("model")),
        ingress(
            "older",
            "2026-02-01T00:00:00Z",
            "ebpf-lb",
            &rule("mlflow").replace("80", "5000")
        ),
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    assert_eq!(
        lookup(&t, "api.example.com", "/x").as_deref(),
        Some("ml/older ml/mlflow:5000")
    );
    assert_eq!(t.diagnostics.len(), 1);
    assert!(t.diagnostics[0].object == "ml/newer", "{:?}", t.diagnostics);
}

#[test]
fn hosts_wildcards_and_default_backend() {
    let yaml = format!(
        "{SERVICES}{}",
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hosts, namespace: ml}
spec:
  ingressClassName: ebpf-lb
  defaultBackend: {service: {name: mlflow, port: {number: 5000}}}
  rules:
  - host: "*.example.com"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}
  - host: exact.example.com
    http: {paths: [{path: /only, pathType: Exact, backend: {service: {name: model, port: {name: http}}}}]}
"#
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(
        lookup(&t, "a.example.com", "/x").as_deref(),
        Some("ml/hosts ml/model:80")
    );
    assert_eq!(
        lookup(&t, "exact.example.com", "/only").as_deref(),
        Some("ml/hosts ml/model:http")
    );
    // Exact host beats the wildcard even when its own paths do not match: default backend.
    assert_eq!(
        lookup(&t, "exact.example.com", "/x").as_deref(),
        Some("ml/hosts ml/mlflow:5000")
    );
    assert_eq!(
        lookup(&t, "a.b.example.com", "/x").as_deref(),
        Some("ml/hosts ml/mlflow:5000")
    );
}

#[test]
fn from_to_www_redirect_maps_the_other_host_unless_it_has_rules() {
    let www = |name: &str, created: &str, host: &str| {
        let on = r#"nginx.ingress.kubernetes.io/from-to-www-redirect: "true""#;
        annotated(name, created, on, host, "model", 80)
    };
    let rules = |host: &str| {
        format!(
            "  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: mlflow, port: {{number: 5000}}}}}}}}]}}"
        )
    };
    let yaml = format!(
        "{SERVICES}{}{}{}{}{}",
        www("bare", "2026-01-01T00:00:00Z", "models.example"),
        www("prefixed", "2026-01-01T00:00:01Z", "www.mlflow.example"),
        www("taken", "2026-01-01T00:00:02Z", "serve.example"),
        ingress(
            "other",
            "2026-01-01T00:00:03Z",
            "ebpf-lb",
            &rules("www.serve.example")
        ),
        www("wild", "2026-01-01T00:00:04Z", "*.wild.example"),
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let w = &t.routes.www_redirects;
    assert_eq!(
        w.get("www.models.example").map(String::as_str),
        Some("models.example")
    );
    assert_eq!(
        w.get("mlflow.example").map(String::as_str),
        Some("www.mlflow.example")
    );
    // The Ingress's own host is served, not redirected.
    assert!(!w.contains_key("models.example"));
    assert_eq!(
        lookup(&t, "models.example", "/x").as_deref(),
        Some("ml/bare ml/model:80")
    );
    // An Ingress of the other host keeps it; the annotation is ignored, with a warning.
    assert!(!w.contains_key("www.serve.example"));
    assert_eq!(
        lookup(&t, "www.serve.example", "/").as_deref(),
        Some("ml/other ml/mlflow:5000")
    );
    assert_eq!(w.len(), 2, "{w:?}");
    // `ebpf-lb routes` and /debug/routes list them.
    let table = crate::routes::render_table(&t.routes);
    let line = table
        .lines()
        .find(|l| l.starts_with("www.models.example "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("308 -> models.example") && line.ends_with("from-to-www-redirect"));
    let warnings: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("ml/taken")
            && warnings[0].contains("from-to-www-redirect")
            && warnings[0].contains("\"www.serve.example\" has rules of its own"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("ml/wild") && warnings[1].contains("wildcard"),
        "{warnings:?}"
    );
}

#[test]
fn default_backend_annotation_and_service_upstream() {
    let annotated = |name: &str, annotations: &str, svc: &str| {
        let host = format!("{name}.example");
        annotated(name, "2026-01-01T00:00:00Z", annotations, &host, svc, 80)
    };
    let empty = r#"
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: ml}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: clustered, namespace: ml}
spec: {clusterIP: 198.18.9.9, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: clustered-1, namespace: ml, labels: {kubernetes.io/service-name: clustered}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: ["198.18.3.3"]}]
"#;
    let yaml = format!(
        "{SERVICES}{empty}{}{}{}{}",
        annotated(
            "fallback",
            "nginx.ingress.kubernetes.io/default-backend: mlflow",
            "empty"
        ),
        annotated(
            "direct",
            "nginx.ingress.kubernetes.io/service-upstream: \"true\"",
            "clustered"
        ),
        annotated("pods", "", "clustered"),
        annotated(
            "missing",
            "nginx.ingress.kubernetes.io/default-backend: nope",
            "empty"
        ),
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let route = |host: &str| t.routes.lookup(host, "/").expect(host);
    let addr = |a: &str| vec![a.parse::<std::net::SocketAddr>().expect("addr")];
    // default-backend: the route keeps its own (endpoint-less) backend and falls back to
    // the named Service's first port.
    let r = route("fallback.example");
    assert!(r.backend.endpoints.is_empty());
    let fallback = r.fallback.as_ref().expect("fallback");
    assert_eq!(fallback.endpoints, addr("198.18.2.2:5000"));
    // service-upstream: the ClusterIP and Service port instead of the pods.
    assert_eq!(
        route("direct.example").backend.endpoints,
        addr("198.18.9.9:80")
    );
    assert_eq!(
        route("pods.example").backend.endpoints,
        addr("198.18.3.3:8080")
    );
    // A default-backend that does not exist rejects the Ingress, naming the annotation.
    assert!(t.routes.lookup("missing.example", "/").is_none());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "ml/missing: metadata.annotations[nginx.ingress.kubernetes.io/default-backend]"
        )),
        "{lines:?}"
    );
}

#[test]
fn class_selection_rules() {
    let base = format!(
        "{SERVICES}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: noclass, namespace: ml}}\nspec: {{defaultBackend: {{service: {{name: model, port: {{number: 80}}}}}}}}\n"
    );
    let without = ClassFilter::default();
    assert!(translate(&snapshot(&base), &without).accepted.is_empty());
    let watch_all = ClassFilter {
        without_class: true,
        ..ClassFilter::default()
    };
    assert_eq!(translate(&snapshot(&base), &watch_all).accepted.len(), 1);
    let default_class = format!(
        "{base}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: lb, annotations: {{ingressclass.kubernetes.io/is-default-class: \"true\"}}}}\nspec: {{controller: {CONTROLLER_NAME}}}\n"
    );
    assert_eq!(
        translate(&snapshot(&default_class), &without)
            .accepted
            .len(),
        1
    );
    let invalid_host = format!(
        "{SERVICES}{}",
        ingress(
            "badhost",
            "2026-01-01T00:00:00Z",
            "ebpf-lb",
            "  - host: a.*.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}",
        )
    );
    let t = translate(&snapshot(&invalid_host), &without);
    assert_eq!(t.diagnostics[0].field, "spec.rules[0].host");
}

/// The seed's Ingress: a regex path with a rewrite, CORS, no SSL redirect, and a Service in
/// another namespace reached through an ExternalName Service.
const SEED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: seldon-mesh, namespace: seldon-mesh}
spec: {ports: [{name: http, port: 80, targetPort: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: seldon-mesh-1, namespace: seldon-mesh, labels: {kubernetes.io/service-name: seldon-mesh}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints: [{addresses: ["198.18.1.2"]}]
---
apiVersion: v1
kind: Service
metadata: {name: seldon-mesh, namespace: financial}
spec: {type: ExternalName, externalName: seldon-mesh.seldon-mesh.svc.cluster.local}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: financial-inference
  namespace: financial
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: "*"
    ebpf-lb.io/request-headers: "Seldon-Model: fraud-detector"
spec:
  ingressClassName: ebpf-lb
  rules:
  - http:
      paths:
      - path: /financial-inference(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: seldon-mesh, port: {number: 80}}}
"#;

#[test]
fn seed_ingress_regex_rewrite_cors_externalname() {
    let t = translate(&snapshot(SEED), &ClassFilter::default());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let r = t
        .routes
        .lookup(
            "ml-api.company.com",
            "/Financial-Inference/v2/models/m/infer",
        )
        .expect("regex route, case-insensitive");
    assert_eq!(r.path_type, PathType::Regex);
    assert_eq!(
        r.backend.endpoints,
        vec!["198.18.1.2:9000".parse().expect("addr")],
        "ExternalName resolved to the target's endpoints"
    );
    let re = r.regex.as_ref().expect("compiled regex");
    let target = r.policy.rewrite.target.as_deref().expect("rewrite target");
    assert_eq!(
        annotations::rewrite::apply(target, re, "/financial-inference/v2/models/m/infer"),
        "/v2/models/m/infer"
    );
    assert!(!r.policy.redirect.ssl_redirect);
    let cors = r.policy.cors.as_ref().expect("cors");
    assert_eq!(cors.origins, ["*"]);
    assert_eq!(r.policy.headers.request.len(), 1);
    let rows = t.routes.rows();
    assert_eq!(rows.len(), 1, "regex routes are listed");
    assert_eq!(rows[0].1.path, "/financial-inference(/|$)(.*)");
    // `(/|$)` makes the regex element-wise: a longer first element does not match.
    assert!(t.routes.lookup("x", "/financial-inferencex").is_none());
}

#[test]
fn invalid_regex_and_missing_configmap_reject_the_ingress() {
    let yaml = format!(
        "{SERVICES}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: bad\n  namespace: ml\n  annotations:\n    nginx.ingress.kubernetes.io/use-regex: \"true\"\n    nginx.ingress.kubernetes.io/custom-headers: missing-cm\nspec:\n  ingressClassName: ebpf-lb\n  rules:\n  - http: {{paths: [{{path: \"/a(\", pathType: ImplementationSpecific, backend: {{service: {{name: model, port: {{number: 80}}}}}}}}]}}\n"
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(t.rejected.len(), 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("ml/bad: metadata.annotations[nginx.ingress.kubernetes.io/custom-headers]: ConfigMap ml/missing-cm not found")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ml/bad: spec.rules[0].http.paths[0].path: invalid regex")),
        "{lines:?}"
    );
}

#[test]
fn canary_weight_is_a_share_of_canary_weight_total() {
    let rule = "  - host: w.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: mlflow, port: {number: 5000}}}}]}";
    let main = ingress(
        "main",
        "2026-01-01T00:00:00Z",
        "ebpf-lb",
        &rule.replace(
            "name: mlflow, port: {number: 5000}",
            "name: model, port: {number: 80}",
        ),
    );
    let table = |weight: &str, total: &str| {
        let canary = ingress("canary", "2026-01-02T00:00:00Z", "ebpf-lb", rule).replace(
            "creationTimestamp: \"2026-01-02T00:00:00Z\"}",
            &format!(
                "creationTimestamp: \"2026-01-02T00:00:00Z\", annotations: {{nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"{weight}\", nginx.ingress.kubernetes.io/canary-weight-total: \"{total}\"}}}}"
            ),
        );
        let t = translate(
            &snapshot(&format!("{SERVICES}{main}{canary}")),
            &ClassFilter::default(),
        );
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        t
    };
    let share = |t: &Translation| {
        let r = t.routes.lookup("w.example", "/").expect("route");
        let headers = http::HeaderMap::new();
        let n = 4000;
        let canary = (0..n)
            .filter(|_| crate::policy::canary::choose(r, &headers).1.is_some())
            .count();
        canary as f64 / f64::from(n)
    };
    assert_eq!(share(&table("1000", "1000")), 1.0);
    assert_eq!(share(&table("0", "1000")), 0.0);
    // 30 of 60 is a half (of the default total of 100 it would be 30%); 4000 draws put the
    // share within +-4 points with overwhelming probability.
    let half = share(&table("30", "60"));
    assert!((0.46..=0.54).contains(&half), "{half}");
}

#[test]
fn canary_attaches_to_the_main_route() {
    let main = ingress(
        "main",
        "2026-01-01T00:00:00Z",
        "ebpf-lb",
        "  - host: ml-api.company.com\n    http: {paths: [{path: /predict, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}",
    );
    let canary = ingress(
        "canary",
        "2026-01-02T00:00:00Z",
        "ebpf-lb",
        "  - host: ml-api.company.com\n    http: {paths: [{path: /predict, pathType: Prefix, backend: {service: {name: mlflow, port: {number: 5000}}}}]}",
    )
    .replace(
        "creationTimestamp: \"2026-01-02T00:00:00Z\"}",
        "creationTimestamp: \"2026-01-02T00:00:00Z\", annotations: {nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"20\", nginx.ingress.kubernetes.io/canary-by-header: X-Canary}}",
    );
    let orphan = ingress(
        "orphan",
        "2026-01-03T00:00:00Z",
        "ebpf-lb",
        "  - host: other.company.com\n    http: {paths: [{path: /x, pathType: Prefix, backend: {service: {name: mlflow, port: {number: 5000}}}}]}",
    )
    .replace("creationTimestamp: \"2026-01-03T00:00:00Z\"}", "creationTimestamp: \"2026-01-03T00:00:00Z\", annotations: {nginx.ingress.kubernetes.io/canary: \"true\"}}");
    let t = translate(
        &snapshot(&format!("{SERVICES}{main}{canary}{orphan}")),
        &ClassFilter::default(),
    );
    let r = t
        .routes
        .lookup("ml-api.company.com", "/predict")
        .expect("route");
    assert_eq!(
        r.ingress.name, "main",
        "the canary does not replace the main route"
    );
    assert_eq!(r.canaries.len(), 1);
    assert_eq!(r.canaries[0].backend.to_string(), "ml/mlflow:5000");
    assert_eq!(r.canaries[0].rule.weight, 20);
    // Metrics labels: the main route's path and Ingress; the service that served.
    let main_labels = crate::routes::RouteInfo {
        path: "/predict".into(),
        namespace: "ml".into(),
        ingress: "main".into(),
        service: "model".into(),
        canary: false,
        no_access_log: false,
    };
    assert_eq!(*r.labels, main_labels);
    assert_eq!(
        *r.canaries[0].labels,
        crate::routes::RouteInfo {
            service: "mlflow".into(),
            canary: true,
            ..main_labels
        }
    );
    assert!(t.routes.lookup("other.company.com", "/x").is_none());
    assert_eq!(t.diagnostics.len(), 1, "{:?}", t.diagnostics);
    assert!(t.diagnostics[0].message.contains("canary is idle"));
}

/// Many Ingresses are compiled on several threads: the result is the one a single thread
/// gives (accepted, rejected, diagnostics, every route), and routes to the same Service port
/// still share one Backend.
#[test]
fn compiling_on_threads_gives_the_same_table() {
    let mut yaml = SERVICES.to_string();
    let n = PARALLEL_FROM + 44;
    for i in 0..n {
        let (service, port, path) = match i % 10 {
            // An unknown Service: rejected, with a diagnostic.
            3 => ("missing", 80, "/p"),
            // Two Ingresses share this host and path: the older one wins.
            5 | 6 => ("mlflow", 5000, "/shared"),
            _ => ("model", 80, "/p"),
        };
        let host = if i % 10 == 6 {
            format!("h{}.example", i - 1)
        } else {
            format!("h{i}.example")
        };
        yaml += &ingress(
            &format!("ing{i}"),
            &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
            "ebpf-lb",
            &format!(
                "  - host: {host}\n    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: {port}}}}}}}}}]}}"
            ),
        );
    }
    let snap = snapshot(&yaml);
    let classes = ClassFilter::default();
    let serial = translate_on(&snap, &classes, &StateRegistry::default(), 1);
    let parallel = translate_on(&snap, &classes, &StateRegistry::default(), 4);
    assert_eq!(serial.accepted, parallel.accepted);
    assert_eq!(serial.rejected, parallel.rejected);
    assert_eq!(serial.diagnostics, parallel.diagnostics);
    assert_eq!(serial.rejected.len(), n / 10 + usize::from(n % 10 > 3));
    for i in 0..n {
        for path in ["/p", "/shared"] {
            let host = format!("h{i}.example");
            assert_eq!(
                lookup(&serial, &host, path),
                lookup(&parallel, &host, path),
                "{host}{path}"
            );
        }
    }
    let backend = |host: &str| {
        parallel
            .routes
            .lookup(host, "/p")
            .map(|r| r.backend.clone())
            .expect("route")
    };
    assert!(Arc::ptr_eq(
        &backend("h0.example"),
        &backend(&format!("h{}.example", n - 1))
    ));
}

/// `auth-type: basic` reads its Secret at translation; whatever would leave a protected
/// Ingress open (its Secret missing or unreadable, digest, client certificates) rejects it,
/// naming the annotation, and the other Ingresses are served.
#[test]
fn basic_auth_reads_its_secret_and_unsupported_access_control_rejects_the_ingress() {
    const BASIC: &str = "nginx.ingress.kubernetes.io/auth-type: basic";
    let secrets = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: ml}
stringData:
  auth: |
    # htpasswd -s
    alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
    bob:$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh.
---
apiVersion: v1
kind: Secret
metadata: {name: map, namespace: ml}
stringData: {carol: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}
---
apiVersion: v1
kind: Secret
metadata: {name: broken, namespace: ml}
stringData: {auth: "dave:zz1234abcdefg"}
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: other}
stringData: {auth: "erin:{PLAIN}x"}
"#;
    let cases = [
        // (name, annotations, rejected field and message, or None: served)
        (
            "file",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: users, nginx.ingress.kubernetes.io/auth-realm: MLflow"),
            None,
        ),
        (
            "map",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: ml/map, nginx.ingress.kubernetes.io/auth-secret-type: auth-map"),
            None,
        ),
        (
            "missing",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: nope"),
            Some(("auth-secret", "Secret ml/nope not found")),
        ),
        (
            "broken",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: broken"),
            Some(("auth-secret", "Secret ml/broken key \"auth\": line 1 (user \"dave\"): unsupported password hash")),
        ),
        (
            "no-key",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: map"),
            Some(("auth-secret", "Secret ml/map has no \"auth\" key")),
        ),
        (
            "no-secret",
            BASIC.to_owned(),
            Some(("auth-secret", "auth-type: basic needs auth-secret")),
        ),
        (
            "other-ns",
            format!("{BASIC}, nginx.ingress.kubernetes.io/auth-secret: other/users"),
            Some(("auth-secret", "is in another namespace")),
        ),
        (
            "digest",
            "nginx.ingress.kubernetes.io/auth-type: digest, nginx.ingress.kubernetes.io/auth-secret: users".to_owned(),
            Some(("auth-type", "digest authentication is not supported")),
        ),
        (
            "mtls",
            "nginx.ingress.kubernetes.io/auth-tls-secret: ml/ca, nginx.ingress.kubernetes.io/auth-tls-verify-depth: \"1\"".to_owned(),
            Some(("auth-tls-secret", "client certificate authentication (auth-tls-*) is not supported")),
        ),
        (
            "mtls-off",
            "nginx.ingress.kubernetes.io/auth-tls-secret: ml/ca, nginx.ingress.kubernetes.io/auth-tls-verify-client: \"off\"".to_owned(),
            None,
        ),
    ];
    let mut yaml = format!("{SERVICES}{secrets}");
    for (name, annotations, _) in &cases {
        let host = format!("{name}.example.com");
        yaml.push_str(&annotated(
            name,
            "2024-01-01T00:00:00Z",
            annotations,
            &host,
            "mlflow",
            5000,
        ));
    }
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    for (name, _, rejected) in &cases {
        let host = format!("{name}.example.com");
        match rejected {
            None => assert!(
                lookup(&t, &host, "/").is_some(),
                "{name} not served: {lines:?}"
            ),
            Some((field, message)) => {
                assert!(lookup(&t, &host, "/").is_none(), "{name} served");
                let prefix = format!(
                    "ml/{name}: metadata.annotations[nginx.ingress.kubernetes.io/{field}]: "
                );
                assert!(
                    lines
                        .iter()
                        .any(|l| l.starts_with(&prefix) && l.contains(message)),
                    "{name}: no {prefix}...{message} in {lines:?}"
                );
            }
        }
    }
    let users = |host: &str| {
        let route = t.routes.lookup(host, "/").expect("route");
        let basic = route.policy.basic_auth.as_ref().expect("basic auth");
        (basic.realm.clone(), basic.credentials.user_count())
    };
    assert_eq!(users("file.example.com"), ("MLflow".to_owned(), 2));
    let file = t.routes.lookup("file.example.com", "/").expect("route");
    assert!(
        file.policy.summary().contains(&"basic-auth"),
        "ebpf-lb routes shows it"
    );
    assert_eq!(users("map.example.com"), (String::new(), 1));
    assert!(
        t.routes
            .lookup("mtls-off.example.com", "/")
            .expect("route")
            .policy
            .basic_auth
            .is_none()
    );
    // Settings of an access control that is not on are said to be ignored.
    let yaml = format!(
        "{SERVICES}{}",
        annotated(
            "realm-only",
            "2024-01-01T00:00:00Z",
            "nginx.ingress.kubernetes.io/auth-realm: x",
            "r.example.com",
            "mlflow",
            5000
        )
    );
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(lookup(&t, "r.example.com", "/").is_some());
    assert_eq!(
        lines,
        [
            "ml/realm-only: metadata.annotations[nginx.ingress.kubernetes.io/auth-realm]: has no effect without auth-type: basic; ignored (warning)"
        ]
    );
}

/// `server-alias` maps each alias to the Ingress's first exact host; an alias with rules of
/// its own, taken by an older Ingress, or on an Ingress without an exact host is ignored
/// with a warning; a name that is not a host name rejects the Ingress.
#[test]
fn server_alias_translation() {
    let alias = |v: &str| format!("nginx.ingress.kubernetes.io/server-alias: \"{v}\"");
    let yaml = [
        SERVICES.to_owned(),
        annotated(
            "a",
            "2024-01-01T00:00:00Z",
            &alias("ML.test, api.ml.test"),
            "models.test",
            "model",
            80,
        ),
        annotated(
            "b",
            "2024-01-02T00:00:00Z",
            &alias("ml.test,mlflow.test"),
            "mlflow.test",
            "mlflow",
            5000,
        ),
        annotated(
            "c",
            "2024-01-03T00:00:00Z",
            &alias("c.test"),
            "*.wild.test",
            "model",
            80,
        ),
        annotated(
            "d",
            "2024-01-04T00:00:00Z",
            &alias("*.star.test"),
            "d.test",
            "model",
            80,
        ),
    ]
    .concat();
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let mut aliases: Vec<_> = t
        .routes
        .aliases
        .iter()
        .map(|(a, h)| format!("{a}->{h}"))
        .collect();
    aliases.sort();
    assert_eq!(
        aliases,
        ["api.ml.test->models.test", "ml.test->models.test"]
    );
    assert_eq!(
        lookup(&t, "ml.test", "/x").as_deref(),
        Some("ml/a ml/model:80")
    );
    assert_eq!(t.routes.serving_host("mlflow.test"), "mlflow.test");
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    let field = "metadata.annotations[nginx.ingress.kubernetes.io/server-alias]";
    for want in [
        format!("ml/b: {field}: \"ml.test\" ignored: already an alias of \"models.test\""),
        format!("ml/b: {field}: \"mlflow.test\" ignored: it has rules of its own"),
        format!("ml/c: {field}: \"c.test\" ignored: the Ingress has no rule with an exact host"),
        format!("ml/d: {field}: \"*.star.test\" is not a host name"),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no {want:?} in {lines:?}"
        );
    }
    assert_eq!(t.rejected.len(), 1, "{lines:?}");
    // `ebpf-lb routes` lists it.
    let table = crate::routes::render_table(&t.routes);
    assert!(
        table.lines().any(|l| l.starts_with("api.ml.test")
            && l.contains("as models.test")
            && l.ends_with("server-alias")),
        "{table}"
    );
}

#[test]
fn ssl_passthrough_translation() {
    let on = "nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"";
    let yaml = [
        SERVICES.to_owned(),
        annotated(
            "a",
            "2024-01-01T00:00:00Z",
            &format!("{on}, nginx.ingress.kubernetes.io/proxy-connect-timeout: \"2\""),
            "Vault.test",
            "model",
            80,
        ),
        annotated(
            "b",
            "2024-01-02T00:00:00Z",
            on,
            "vault.test",
            "mlflow",
            5000,
        ),
        annotated("c", "2024-01-03T00:00:00Z", on, "*.wild.test", "model", 80),
        annotated("d", "2024-01-04T00:00:00Z", on, "d.test", "model", 80)
            .replace("path: /,", "path: /api,"),
    ]
    .concat();
    let t = translate(&snapshot(&yaml), &ClassFilter::default());
    let lines: Vec<String> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    let hosts: Vec<&String> = t.routes.passthrough.keys().collect();
    assert_eq!(hosts, ["vault.test"], "{lines:?}");
    let p = t.routes.passthrough_for("vault.test").expect("passthrough");
    assert_eq!(p.ingress.to_string(), "ml/a");
    assert_eq!(p.backend.to_string(), "ml/model:80");
    assert_eq!(p.connect_timeout, std::time::Duration::from_secs(2));
    // Plain HTTP for the host still takes the Ingress's routes.
    assert_eq!(
        lookup(&t, "vault.test", "/").as_deref(),
        Some("ml/a ml/model:80")
    );
    let field = "metadata.annotations[nginx.ingress.kubernetes.io/ssl-passthrough]";
    for want in [
        format!(
            "ml/b: {field}: ignored for host \"vault.test\": already passed through to \
             ml/model:80 by ml/a (older)"
        ),
        format!("ml/c: {field}: ignored for the wildcard host \"*.wild.test\""),
        format!("ml/d: {field}: ignored for host \"d.test\": it has no path \"/\""),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no {want:?} in {lines:?}"
        );
    }
    assert!(t.rejected.is_empty(), "{lines:?}");
    let table = crate::routes::render_table(&t.routes);
    assert!(
        table.lines().any(|l| l.starts_with("vault.test")
            && l.contains("tls -> ml/model:80")
            && l.ends_with("ssl-passthrough")),
        "{table}"
    );
}
