//! ingress-nginx annotations through the real daemon on loopback: the seed's regex path
//! with rewrite and CORS, canary by weight / header / cookie, auth-url, rate limits, source
//! ranges, redirects (codes, force-ssl, from-to-www), custom and response headers. Real
//! `ebpf-lb`, real echo backends, real curl.
use std::path::PathBuf;

use tests::local::{LocalLb, TempDir, ebpf_lb_bin, fetch, start_backend};

fn backend_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_echo-backend"))
}

fn service(name: &str, port: u16) -> String {
    tests::local::loopback_service("ml", name, port)
}

fn ingress(
    name: &str,
    annotations: &[(&str, &str)],
    path: &str,
    path_type: &str,
    svc: &str,
) -> String {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| {
            format!(
                "\n    {}: {v:?}",
                if k.contains('/') {
                    k.to_string()
                } else {
                    format!("nginx.ingress.kubernetes.io/{k}")
                }
            )
        })
        .collect();
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: ml
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {{}}{ann}
spec:
  ingressClassName: ebpf-lb
  rules:
  - http:
      paths:
      - {{path: "{path}", pathType: {path_type}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}
"#
    )
    .replace("annotations: {}\n", "annotations:\n")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn seed_ingress_rewrite_cors_and_request_headers() {
    let bin = backend_bin();
    let (_b, port) = start_backend(&bin, "seldon");
    let dir = TempDir::new("ann-seed");
    let mut m = service("seldon", port);
    m += &ingress(
        "financial-inference",
        &[
            ("rewrite-target", "/$2"),
            ("ssl-redirect", "false"),
            ("enable-cors", "true"),
            ("cors-allow-origin", "*"),
            ("ebpf-lb.io/request-headers", "Seldon-Model: fraud-detector"),
        ],
        "/financial-inference(/|$)(.*)",
        "ImplementationSpecific",
        "seldon",
    );
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    let (status, head, body) = fetch(&[
        "-H",
        "Origin: https://app.example.com",
        &lb.url("/financial-inference/v2/models/fraud/infer?x=1"),
    ]);
    assert_eq!(status, 200, "{body}");
    let j = json(&body);
    assert_eq!(j["path"], "/v2/models/fraud/infer");
    assert_eq!(j["query"], "x=1");
    assert_eq!(j["seldon_model"], "fraud-detector");
    assert!(
        head.contains("access-control-allow-origin: https://app.example.com"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );

    let (status, _, body) = fetch(&[&lb.url("/financial-inference")]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["path"], "/");

    // Preflight is answered by the proxy.
    let (status, head, _) = fetch(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: POST",
        &lb.url("/financial-inference/v2/models/fraud/infer"),
    ]);
    assert_eq!(status, 204);
    assert!(
        head.contains("access-control-allow-methods: get, put, post, delete, patch, options"),
        "{head}"
    );
    assert!(head.contains("access-control-max-age: 1728000"), "{head}");

    let (status, _, _) = fetch(&[&lb.url("/financial-inferencex")]);
    assert_eq!(status, 404);
}

#[test]
fn canary_by_weight_header_and_cookie() {
    let bin = backend_bin();
    let (_m, main_port) = start_backend(&bin, "model-v1");
    let (_c, canary_port) = start_backend(&bin, "model-v2");
    let dir = TempDir::new("ann-canary");
    let mut m = service("v1", main_port) + &service("v2", canary_port);
    m += &ingress("main", &[], "/predict", "Prefix", "v1");
    m += &ingress(
        "canary",
        &[
            ("canary", "true"),
            ("canary-weight", "20"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary"),
        ],
        "/predict",
        "Prefix",
        "v2",
    )
    .replace("2026-01-01", "2026-01-02");
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    // 10k requests over keep-alive (curl URL globbing): the canary's share is 20% +- 2%.
    let out =
        tests::local::curl(&["--max-time", "120", &lb.url("/predict?i=[1-10000]")]).expect("curl");
    let v2 = out.matches("\"model-v2\"").count();
    let v1 = out.matches("\"model-v1\"").count();
    assert_eq!(v1 + v2, 10_000, "every request answered");
    let share = v2 as f64 / 10_000.0;
    assert!((0.18..=0.22).contains(&share), "canary share {share}");

    for (args, want) in [
        (vec!["-H", "X-Canary: always"], "model-v2"),
        (
            vec!["-H", "X-Canary: never", "-b", "canary=always"],
            "model-v1",
        ),
        (vec!["-b", "canary=always"], "model-v2"),
        (vec!["-b", "canary=never"], "model-v1"),
    ] {
        for _ in 0..20 {
            let url = lb.url("/predict");
            let (status, _, body) = fetch(&[args.as_slice(), &[url.as_str()]].concat());
            assert_eq!(status, 200);
            assert_eq!(json(&body)["backend"], want, "{args:?}");
        }
    }
}

#[test]
fn auth_url_allow_deny_signin_and_service_down() {
    let bin = backend_bin();
    let (_app, app_port) = start_backend(&bin, "app");
    let (_auth, auth_port) = start_backend(&bin, "auth");
    let dead_port = tests::local::free_port();
    let dir = TempDir::new("ann-auth");
    let mut m = service("app", app_port);
    let auth = |status: u16| format!("http://127.0.0.1:{auth_port}/check?status={status}");
    let allow = auth(200);
    m += &ingress(
        "allow",
        &[
            ("auth-url", &allow),
            ("auth-response-headers", "X-Auth-User"),
        ],
        "/allow",
        "Prefix",
        "app",
    );
    let deny = auth(403);
    m += &ingress("deny", &[("auth-url", &deny)], "/deny", "Prefix", "app");
    let unauth = auth(401);
    m += &ingress(
        "signin",
        &[
            ("auth-url", &unauth),
            ("auth-signin", "https://login.example.com/start"),
        ],
        "/signin",
        "Prefix",
        "app",
    );
    let down = format!("http://127.0.0.1:{dead_port}/check");
    m += &ingress("down", &[("auth-url", &down)], "/down", "Prefix", "app");
    // oauth2-proxy's pattern: the auth service behind this same proxy, reached over
    // https://$host (here with the HTTPS port the test gave it), the signin with its own rd.
    m += &service("oauth2", auth_port);
    m += &ingress("oauth2", &[], "/oauth2", "Prefix", "oauth2");
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);
    // (Written once the HTTPS port is known.)
    let via_host = |status: u16| {
        format!(
            "https://$host:{}/oauth2/auth?status={status}&u=$escaped_request_uri",
            lb.https_port
        )
    };
    let (ok, no) = (via_host(200), via_host(401));
    m += &ingress("viahost", &[("auth-url", &ok)], "/viahost", "Prefix", "app");
    m += &ingress(
        "viahostno",
        &[
            ("auth-url", &no),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
        ],
        "/viahostno",
        "Prefix",
        "app",
    );
    dir.write("m.yaml", &m);
    tests::wait::wait_until(std::time::Duration::from_secs(10), || {
        (fetch(&[&lb.url("/viahostno/x")]).0 != 404).then_some(())
    })
    .expect("the new Ingresses are served");

    let (status, _, body) = fetch(&[&lb.url("/allow/x")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["backend"], "app");
    let (status, _, _) = fetch(&[&lb.url("/deny/x")]);
    assert_eq!(status, 403);
    let (status, head, _) = fetch(&[&lb.url("/signin/x?a=1")]);
    assert_eq!(status, 302);
    let want = format!(
        "location: https://login.example.com/start?rd=http%3a%2f%2f127.0.0.1%3a{}%2fsignin%2fx%3fa%3d1",
        lb.http_port
    );
    assert!(head.contains(&want), "{head}");
    let (status, _, _) = fetch(&[&lb.url("/down/x")]);
    assert_eq!(
        status, 500,
        "an unreachable auth service never opens the door"
    );
    let (status, _, body) = fetch(&[&lb.url("/viahost/x")]);
    assert_eq!(status, 200, "authorized over https://$host: {body}");
    assert_eq!(json(&body)["backend"], "app");
    let (status, head, _) = fetch(&[&lb.url("/viahostno/x?a=1")]);
    assert_eq!(status, 302, "{head}");
    assert!(
        head.contains("location: https://127.0.0.1/oauth2/start?rd=%2fviahostno%2fx%3fa%3d1\r\n"),
        "{head}"
    );
}

/// `auth-type: basic` with an htpasswd Secret (`$apr1$` as `htpasswd` writes by default,
/// `$2y$` as `htpasswd -B`): the challenge without or with wrong credentials, the backend
/// with the right ones (and the header passed on, as nginx does). An Ingress asking for
/// client certificates, which ebpf-lb does not do, is not served at all.
#[test]
fn basic_auth_and_unsupported_client_certificates_never_serve_open() {
    let bin = backend_bin();
    let (_app, port) = start_backend(&bin, "mlflow");
    let dir = TempDir::new("ann-basic");
    let mut m = service("mlflow", port);
    // alice: "password"; bob: "U*U" (OpenBSD's bcrypt test vector, cost 5).
    m += r#"
---
apiVersion: v1
kind: Secret
metadata: {name: mlflow-users, namespace: ml}
type: Opaque
stringData:
  auth: |
    alice:$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh.
    bob:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW
"#;
    m += &ingress(
        "mlflow",
        &[
            ("auth-type", "basic"),
            ("auth-secret", "mlflow-users"),
            ("auth-realm", "MLflow"),
        ],
        "/mlflow",
        "Prefix",
        "mlflow",
    );
    // The same users, and an address list: `satisfy: any` lets the listed address in
    // without credentials and everyone else with them; the default (all) needs both.
    let guarded = |satisfy: &'static str| {
        [
            ("auth-type", "basic"),
            ("auth-secret", "mlflow-users"),
            ("whitelist-source-range", "127.0.0.2/32"),
            ("satisfy", satisfy),
        ]
    };
    m += &ingress("either", &guarded("any"), "/either", "Prefix", "mlflow");
    m += &ingress("both", &guarded("all"), "/both", "Prefix", "mlflow");
    m += &ingress(
        "mtls",
        &[("auth-tls-secret", "ml/client-ca")],
        "/mtls",
        "Prefix",
        "mlflow",
    );
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);
    let url = lb.url("/mlflow/api/2.0/experiments");

    for creds in [
        None,
        Some("alice:wrong"),
        Some("mallory:password"),
        Some("bob:U*V"),
    ] {
        let mut args = vec![url.as_str()];
        if let Some(c) = creds {
            args.extend(["-u", c]);
        }
        let (status, head, body) = fetch(&args);
        assert_eq!(status, 401, "{creds:?}: {body}");
        assert!(
            head.contains("www-authenticate: basic realm=\"mlflow\""),
            "{creds:?}: {head}"
        );
        assert!(
            !body.contains("\"backend\""),
            "{creds:?} reached the backend"
        );
    }
    for (creds, header) in [
        ("alice:password", "Basic YWxpY2U6cGFzc3dvcmQ="),
        ("bob:U*U", "Basic Ym9iOlUqVQ=="),
    ] {
        // Twice: the second is answered from the verified-credentials memory.
        for _ in 0..2 {
            let (status, _, body) = fetch(&[&url, "-u", creds]);
            assert_eq!(status, 200, "{creds}: {body}");
            let b = json(&body);
            assert_eq!(b["backend"], "mlflow");
            assert_eq!(b["authorization"], header);
        }
    }
    let from = |addr: &str, path: &str, creds: Option<&str>| {
        let url = lb.url(path);
        let mut args = vec!["--interface", addr, url.as_str()];
        if let Some(c) = creds {
            args.extend(["-u", c]);
        }
        fetch(&args).0
    };
    assert_eq!(from("127.0.0.2", "/either", None), 200, "a listed address");
    assert_eq!(
        from("127.0.0.1", "/either", None),
        401,
        "anyone else: credentials"
    );
    assert_eq!(from("127.0.0.1", "/either", Some("alice:password")), 200);
    assert_eq!(
        from("127.0.0.2", "/both", None),
        401,
        "all: the address is not enough"
    );
    assert_eq!(
        from("127.0.0.1", "/both", Some("alice:password")),
        403,
        "nor are credentials"
    );
    assert_eq!(from("127.0.0.2", "/both", Some("alice:password")), 200);
    let (status, _, body) = fetch(&[&lb.url("/mtls/x")]);
    assert_eq!(
        status, 404,
        "an Ingress asking for client certificates is not served: {body}"
    );
}

/// `custom-http-errors` with `default-backend`: a listed status from the backend is
/// answered with the error page Service's response, which is told what failed (X-Code,
/// X-Original-URI, X-Service-Name); other statuses pass as they are.
#[test]
fn custom_http_errors_are_answered_by_the_default_backend() {
    let bin = backend_bin();
    let (_app, app_port) = start_backend(&bin, "app");
    let (_pages, pages_port) = start_backend(&bin, "error-pages");
    let dir = TempDir::new("ann-errors");
    let mut m = service("app", app_port);
    m += &service("error-pages", pages_port);
    m += &ingress(
        "app",
        &[
            ("default-backend", "error-pages"),
            ("custom-http-errors", "404,503"),
        ],
        "/app",
        "Prefix",
        "app",
    );
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    let (status, _, body) = fetch(&[&lb.url("/app/x?status=503")]);
    assert_eq!(status, 200, "the error page Service's answer: {body}");
    let page = json(&body);
    assert_eq!(page["backend"], "error-pages");
    assert_eq!(page["path"], "/");
    assert_eq!(page["x_code"], "503");
    assert_eq!(page["x_original_uri"], "/app/x?status=503");
    assert_eq!(page["x_service_name"], "app");
    // Not listed, or no error: the backend's own response.
    let (status, _, body) = fetch(&[&lb.url("/app/x?status=500")]);
    assert_eq!(status, 500);
    assert_eq!(json(&body)["backend"], "app");
    let (status, _, body) = fetch(&[&lb.url("/app/x")]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["backend"], "app");
}

#[test]
fn rate_limit_source_ranges_and_redirects() {
    let bin = backend_bin();
    let (_app, port) = start_backend(&bin, "app");
    let dir = TempDir::new("ann-limits");
    let mut m = service("app", port);
    m += &ingress(
        "limited",
        &[("limit-rps", "5"), ("limit-burst-multiplier", "1")],
        "/limited",
        "Prefix",
        "app",
    );
    m += &ingress(
        "private",
        &[("whitelist-source-range", "127.0.0.2/32")],
        "/private",
        "Prefix",
        "app",
    );
    m += &ingress(
        "relocated",
        &[
            ("proxy-redirect-from", "http://app.internal:8080/"),
            ("proxy-redirect-to", "/relocated/"),
        ],
        "/relocated",
        "Prefix",
        "app",
    );
    m += &ingress(
        "cookies",
        &[
            ("proxy-cookie-path", "/ /cookies/"),
            ("proxy-cookie-domain", "app.internal example.test"),
        ],
        "/cookies",
        "Prefix",
        "app",
    );
    m += &ingress(
        "moved",
        &[("permanent-redirect", "https://new.example.com/x")],
        "/moved",
        "Prefix",
        "app",
    );
    m += &ingress("root", &[("app-root", "/app/")], "/", "Prefix", "app");
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    // 20 back-to-back requests with a burst of 5: at least 14 refused (tokens refill at
    // 5/s, so a slow machine may earn a few more), and a second client is unaffected.
    let out = tests::local::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        &lb.url("/limited?i=[1-20]"),
    ])
    .expect("curl");
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes.len(), 20);
    assert!(codes[..5].iter().all(|c| *c == "200"), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == "503").count() >= 14,
        "{codes:?}"
    );
    let (status, _, _) = fetch(&["--interface", "127.0.0.2", &lb.url("/limited")]);
    assert_eq!(status, 200, "another source has its own bucket");

    // ConfigMap ebpf-lb's limit-req-status-code (ingress-nginx's key) changes the answer.
    dir.write(
        "configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ebpf-lb, namespace: ebpf-lb}\n\
         data: {limit-req-status-code: \"429\"}\n",
    );
    let refused_with = |code: &str| {
        tests::local::curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &lb.url("/limited?j=[1-10]"),
        ])
        .ok()
        .filter(|out| out.lines().any(|c| c == code))
    };
    tests::wait::wait_until(std::time::Duration::from_secs(10), || refused_with("429"))
        .expect("rate-limited requests answered 429 after the ConfigMap change");

    let (status, _, _) = fetch(&[&lb.url("/private")]);
    assert_eq!(status, 403);
    let (status, _, _) = fetch(&["--interface", "127.0.0.2", &lb.url("/private")]);
    assert_eq!(status, 200);

    // The backend's own redirect, rewritten on the way (proxy-redirect-from/-to); one to
    // elsewhere is left alone.
    let back = |to: &str| lb.url(&format!("/relocated/x?status=302&location={to}"));
    let (status, head, _) = fetch(&[&back("http://app.internal:8080/login?next=/a")]);
    assert_eq!(status, 302);
    assert!(
        head.contains("location: /relocated/login?next=/a\r\n"),
        "{head}"
    );
    let (_, head, _) = fetch(&[&back("https://sso.example.com/")]);
    assert!(
        head.contains("location: https://sso.example.com/\r\n"),
        "{head}"
    );
    // The backend's cookies, their Path and Domain rewritten (proxy-cookie-path/-domain).
    let (status, head, _) = fetch(&[&lb.url(
        "/cookies/x?set-cookie=s%3D1%3B%20Path%3D%2F%3B%20Domain%3Dapp.internal%3B%20HttpOnly\
         &set-cookie=u%3D2%3B%20path%3D%2Fui%3B%20Domain%3Dother.example",
    )]);
    assert_eq!(status, 200);
    let cookies: Vec<&str> = head
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("set-cookie:"))
        .collect();
    assert_eq!(
        cookies,
        [
            "set-cookie: s=1; path=/cookies/; domain=example.test; httponly",
            "set-cookie: u=2; path=/cookies/ui; domain=other.example",
        ],
        "{head}"
    );
    let (status, head, _) = fetch(&[&lb.url("/moved/a")]);
    assert_eq!(status, 301);
    assert!(
        head.contains("location: https://new.example.com/x"),
        "{head}"
    );
    let (status, head, _) = fetch(&[&lb.url("/")]);
    assert_eq!(status, 302);
    assert!(head.contains("location: /app/"), "{head}");
}

#[test]
fn www_redirect_and_redirect_codes() {
    let bin = backend_bin();
    let (_app, port) = start_backend(&bin, "app");
    let dir = TempDir::new("ann-redirects");
    let with_host = |yaml: String, host: &str| {
        yaml.replace("  - http:", &format!("  - host: {host}\n    http:"))
    };
    let mut m = service("app", port);
    m += &with_host(
        ingress(
            "models",
            &[("from-to-www-redirect", "true")],
            "/",
            "Prefix",
            "app",
        ),
        "models.test",
    );
    m += &ingress(
        "moved",
        &[
            ("permanent-redirect", "https://new.example.com/x"),
            ("permanent-redirect-code", "308"),
        ],
        "/moved",
        "Prefix",
        "app",
    );
    m += &ingress(
        "temp",
        &[("temporal-redirect", "https://elsewhere.example.com/")],
        "/temp",
        "Prefix",
        "app",
    );
    m += &ingress(
        "forced",
        &[("force-ssl-redirect", "true")],
        "/secure",
        "Prefix",
        "app",
    );
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    // The other host of an Ingress with from-to-www-redirect goes to the Ingress's host...
    let (status, head, _) = fetch(&["-H", "Host: www.models.test", &lb.url("/v2/x?q=1")]);
    assert_eq!(status, 308, "{head}");
    assert!(
        head.contains("location: http://models.test/v2/x?q=1"),
        "{head}"
    );
    // ...and the Ingress's own host is served.
    let (status, _, body) = fetch(&["-H", "Host: models.test", &lb.url("/v2/x")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["backend"], "app");

    let (status, head, _) = fetch(&[&lb.url("/moved/a")]);
    assert_eq!(status, 308);
    assert!(
        head.contains("location: https://new.example.com/x"),
        "{head}"
    );
    let (status, head, _) = fetch(&[&lb.url("/temp")]);
    assert_eq!(status, 302);
    assert!(
        head.contains("location: https://elsewhere.example.com/"),
        "{head}"
    );
    // force-ssl-redirect applies although the host has no TLS section.
    let (status, head, _) = fetch(&["-H", "Host: plain.test", &lb.url("/secure/p?a=b")]);
    assert_eq!(status, 308);
    assert!(
        head.contains("location: https://plain.test/secure/p?a=b"),
        "{head}"
    );
}

#[test]
fn custom_and_response_headers_reach_the_client() {
    let bin = backend_bin();
    let (_app, port) = start_backend(&bin, "app");
    let dir = TempDir::new("ann-headers");
    let mut m = service("app", port);
    m += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: resp-headers, namespace: ml}\n\
          data: {X-Served-By: ebpf-lb, Cache-Control: no-store}\n";
    m += &ingress(
        "headers",
        &[
            ("custom-headers", "ml/resp-headers"),
            (
                "ebpf-lb.io/response-headers",
                "Seldon-Model: fraud-detector",
            ),
        ],
        "/",
        "Prefix",
        "app",
    );
    dir.write("m.yaml", &m);
    let lb = LocalLb::start(&ebpf_lb_bin(&bin), &dir.0);

    let (status, head, body) = fetch(&[&lb.url("/predict")]);
    assert_eq!(status, 200, "{body}");
    for line in [
        "x-served-by: ebpf-lb",
        "cache-control: no-store",
        "seldon-model: fraud-detector",
    ] {
        assert!(head.contains(line), "{line} missing: {head}");
    }
}
