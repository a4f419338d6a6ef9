//! The L7 proxy end to end on loopback: the real `ebpf-lb run`, in-process backends
//! (`tests::l7`), real curl / openssl / raw sockets. HTTP/1.1, h2c and h2 over TLS (ALPN),
//! SNI, WebSocket, SSE streaming, balancing and affinity, retries on the statuses in
//! `proxy-next-upstream`, retries and ejection when a backend dies, request limits and
//! smuggling attempts, a 100 MB upload with the proxy's memory bounded, graceful shutdown
//! with a request in flight.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use tests::{
    l7::TestBackend,
    local::{LocalLb, TempDir, curl, ebpf_lb_bin, fetch, free_port},
    wait::wait_until,
};

fn ebpf_lb() -> PathBuf {
    ebpf_lb_bin(&PathBuf::from(env!("CARGO_BIN_EXE_echo-backend")))
}

/// A Service `svc` in namespace `t` whose endpoints are `backends` (one slice each, as
/// their ports differ).
fn service(backends: &[&TestBackend]) -> String {
    let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
    service_on(&ports)
}

/// A Service `svc` in namespace `t` whose endpoints are 127.0.0.1 on `ports`.
fn service_on(ports: &[u16]) -> String {
    let mut s = String::from(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: t}\n\
         spec: {ports: [{name: http, port: 80}]}\n",
    );
    for (i, port) in ports.iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}, namespace: t, labels: {{kubernetes.io/service-name: svc}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
        ));
    }
    s
}

/// [`service_on`] for a Service called `name` (its slices named after it).
fn service_named(name: &str, ports: &[u16]) -> String {
    service_on(ports).replace("name: svc", &format!("name: {name}"))
}

/// [`ingress`], sending to the Service called `svc`.
fn ingress_to(
    svc: &str,
    name: &str,
    host: Option<&str>,
    annotations: &[(&str, &str)],
    tls: &str,
) -> String {
    ingress(name, host, annotations, tls).replace("name: svc,", &format!("name: {svc},"))
}

/// An Ingress `name` sending `host` (or every host) to `svc`, with nginx annotations.
fn ingress(name: &str, host: Option<&str>, annotations: &[(&str, &str)], tls: &str) -> String {
    let ann: String = if annotations.is_empty() {
        " {}".to_owned()
    } else {
        annotations
            .iter()
            .map(|(k, v)| format!("\n    nginx.ingress.kubernetes.io/{k}: {v:?}"))
            .collect()
    };
    let host = host.map_or(String::new(), |h| format!("host: {h}, "));
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         namespace: t\n  annotations:{ann}\nspec:\n  ingressClassName: ebpf-lb\n{tls}  \
         rules: [{{{host}http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: \
         {{name: svc, port: {{name: http}}}}}}}}]}}}}]\n"
    )
}

struct Lb {
    lb: LocalLb,
    https_port: u16,
    _dir: TempDir,
}

fn start(tag: &str, yaml: &str) -> Lb {
    start_with(tag, yaml, &[])
}

/// [`start`] with more `ebpf-lb run` arguments.
fn start_with(tag: &str, yaml: &str, extra: &[&str]) -> Lb {
    let dir = TempDir::new(tag);
    dir.write("m.yaml", yaml);
    let mut args = vec!["--proxy-workers", "1"];
    args.extend_from_slice(extra);
    let lb = LocalLb::start_with(&ebpf_lb(), &dir.0, &args);
    Lb {
        https_port: lb.https_port,
        lb,
        _dir: dir,
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// Writes `request` on a new connection and reads until the peer closes or `done` holds.
fn raw(port: u16, request: &[u8], done: impl Fn(&str) -> bool) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if done(&String::from_utf8_lossy(&out)) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http1_h2c_and_h2_over_tls_with_request_ids() {
    let b = TestBackend::start("a");
    let h2c = TestBackend::start("h2c");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("plain", Some("plain.test"), &[], ""));
    yaml.push_str(&service_named("svc2", &[h2c.addr.port()]));
    yaml.push_str(&ingress_to(
        "svc2",
        "h2c",
        Some("h2c.test"),
        &[("backend-protocol", "H2C")],
        "",
    ));
    let lb = start("l7-protocols", &yaml);
    let url = lb.lb.url("/hello?x=1");

    // HTTP/1.1 from curl: forwarded headers and a generated X-Request-ID.
    let (status, _, body) = fetch(&["-H", "Host: plain.test", &url]);
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    assert_eq!(v["headers"]["host"], "plain.test");
    let id = v["headers"]["x-request-id"].as_str().expect("x-request-id");
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    // A client's X-Request-ID is passed on as it is.
    let (_, _, body) = fetch(&["-H", "Host: plain.test", "-H", "X-Request-ID: abc-1", &url]);
    assert_eq!(json(&body)["headers"]["x-request-id"], "abc-1");

    // h2c with prior knowledge.
    let out = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: plain.test",
        "-w",
        "\n%{http_version}",
        &url,
    ])
    .expect("h2c");
    assert!(out.ends_with("\n2"), "{out}");

    // h2 over TLS, negotiated by ALPN; and http/1.1 over TLS.
    let tls_url = format!("https://plain.test:{}/tls", lb.https_port);
    let resolve = format!("plain.test:{}:127.0.0.1", lb.https_port);
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&[
            "-k",
            flag,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &tls_url,
        ])
        .expect("https");
        let (body, version) = out.rsplit_once('\n').expect("version line");
        assert_eq!(version, want, "{flag}");
        assert_eq!(json(body)["headers"]["x-forwarded-proto"], "https");
    }

    // An h2c backend (backend-protocol: H2C) gets HTTP/2 from the proxy.
    let (status, _, body) = fetch(&["-H", "Host: h2c.test", &url]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["version"], "HTTP/2.0");
    assert_eq!(json(&body)["backend"], "h2c");
}

/// Which authority a request asked for (RFC 9112 3.2.2): an absolute-form target's wins over
/// Host for routing, `$host` and what the backend sees; `upstream-vhost` replaces the
/// upstream Host (HTTP/1.1) or :authority (h2) while X-Forwarded-Host keeps the client's.
#[test]
fn the_request_target_authority_routes_and_upstream_vhost_replaces_the_upstream_one() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let h2c = TestBackend::start("h2c");
    let mut yaml = service(&[&a]);
    yaml.push_str(&ingress("a", Some("a.test"), &[], ""));
    yaml.push_str(&service_named("svc2", &[b.addr.port()]));
    yaml.push_str(&ingress_to(
        "svc2",
        "b",
        Some("b.test"),
        &[("upstream-vhost", "internal.b")],
        "",
    ));
    yaml.push_str(&service_named("svc3", &[h2c.addr.port()]));
    yaml.push_str(&ingress_to(
        "svc3",
        "h2",
        Some("h2.test"),
        &[
            ("backend-protocol", "H2C"),
            ("upstream-vhost", "internal.h2"),
        ],
        "",
    ));
    let lb = start("l7-authority", &yaml);
    let port = lb.lb.http_port;

    // Absolute-form: routed by the target's authority, not by Host.
    let out = raw(
        port,
        b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        |_| false,
    );
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v = json(body.trim());
    assert_eq!(v["backend"], "a", "{out}");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["headers"]["host"], "a.test");
    assert_eq!(v["headers"]["x-forwarded-host"], "a.test");

    // upstream-vhost over HTTP/1.1.
    let url = lb.lb.url("/y");
    let (status, _, body) = fetch(&["-H", "Host: b.test", &url]);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["backend"], "b");
    assert_eq!(v["headers"]["host"], "internal.b");
    assert_eq!(v["headers"]["x-forwarded-host"], "b.test");

    // upstream-vhost to an h2 backend from an h2 client: the client's :authority is replaced.
    let out = curl(&["--http2-prior-knowledge", "-H", "Host: h2.test", &url]).expect("h2c");
    let v = json(&out);
    assert_eq!(v["backend"], "h2c", "{out}");
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["authority"], "internal.h2");
    assert_eq!(v["headers"]["x-forwarded-host"], "h2.test");
}

fn openssl_san(port: u16, sni: Option<&str>) -> String {
    let mut cmd = Command::new("sh");
    let servername = sni.map_or(String::new(), |s| format!("-servername {s}"));
    cmd.arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{port} {servername} </dev/null 2>/dev/null \
         | openssl x509 -noout -ext subjectAltName"
    ));
    let out = cmd.stderr(Stdio::null()).output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The backend that answers `GET https://host/` (SNI and Host `host`) on the HTTPS `port`.
fn https_backend(port: u16, host: &str) -> String {
    let out = curl(&[
        "-k",
        "--resolve",
        &format!("{host}:{port}:127.0.0.1"),
        &format!("https://{host}:{port}/"),
    ])
    .unwrap_or_else(|e| panic!("curl {host}: {e}"));
    json(&out)["backend"].as_str().unwrap_or("").to_owned()
}

fn tls_secret(name: &str, host: &str) -> String {
    tls_secret_for(name, &[host])
}

/// A kubernetes.io/tls Secret `name` in `t` with a new self-signed certificate for `hosts`.
fn tls_secret_for(name: &str, hosts: &[&str]) -> String {
    let (_, crt, key) = lb_userspace::tls::self_signed(hosts).expect("self-signed");
    let indent = |s: &str| -> String { s.lines().map(|l| format!("    {l}\n")).collect() };
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: t}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&crt),
        indent(&key)
    )
}

#[test]
fn sni_chooses_the_certificate_per_host_and_the_default_otherwise() {
    let b = TestBackend::start("a");
    let mut yaml = service(&[&b]);
    yaml.push_str(&tls_secret("a-cert", "a.test"));
    yaml.push_str(&tls_secret("wild-cert", "*.models.test"));
    yaml.push_str(&ingress(
        "a",
        Some("a.test"),
        &[],
        "  tls: [{hosts: [a.test], secretName: a-cert}]\n",
    ));
    yaml.push_str(&ingress(
        "m",
        Some("x.models.test"),
        &[],
        "  tls: [{hosts: [\"*.models.test\"], secretName: wild-cert}]\n",
    ));
    let lb = start("l7-sni", &yaml);
    let p = lb.https_port;
    assert!(openssl_san(p, Some("a.test")).contains("DNS:a.test"));
    assert!(openssl_san(p, Some("x.models.test")).contains("DNS:*.models.test"));
    let other = openssl_san(p, Some("unknown.test"));
    assert!(other.contains("DNS:ebpf-lb.invalid"), "{other}");
    assert!(openssl_san(p, None).contains("DNS:ebpf-lb.invalid"));
    // And the request goes through with SNI.
    assert_eq!(https_backend(p, "a.test"), "a");
}

/// `server-alias`: the alias is served with the Ingress host's routes and certificate;
/// an alias that another Ingress has rules for stays that Ingress's.
#[test]
fn server_alias_serves_the_host_with_its_certificate() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let mut yaml = service(&[&a]);
    yaml.push_str(&service_named("svc-b", &[b.addr.port()]));
    yaml.push_str(&tls_secret("a-cert", "models.test"));
    yaml.push_str(&ingress(
        "a",
        Some("models.test"),
        &[
            ("server-alias", "ml.test, Models.Internal"),
            ("ssl-redirect", "false"),
        ],
        "  tls: [{hosts: [models.test], secretName: a-cert}]\n",
    ));
    // "taken.test" has rules of its own: not an alias.
    yaml.push_str(&ingress_to(
        "svc-b",
        "b",
        Some("taken.test"),
        &[("server-alias", "taken.test")],
        "",
    ));
    yaml.push_str(&ingress(
        "c",
        Some("other.test"),
        &[("server-alias", "taken.test")],
        "",
    ));
    let lb = start("l7-alias", &yaml);
    let http = |host: &str| {
        let out = curl(&["-H", &format!("Host: {host}"), &lb.lb.url("/x")]).expect("curl");
        json(&out)["backend"].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(http("ml.test"), "a");
    assert_eq!(http("models.internal"), "a");
    assert_eq!(http("taken.test"), "b");
    let p = lb.https_port;
    let san = openssl_san(p, Some("ml.test"));
    assert!(san.contains("DNS:models.test"), "alias handshake: {san}");
    assert_eq!(https_backend(p, "ml.test"), "a");
}

#[test]
fn default_certificate_from_a_secret_and_a_certificate_replaced_live() {
    let b = TestBackend::start("a");
    let a_cert = tls_secret("a-cert", "a.test");
    let default_cert = tls_secret("default-cert", "fallback.test");
    let mut yaml = service(&[&b]);
    yaml.push_str(&default_cert);
    yaml.push_str(&a_cert);
    yaml.push_str(&ingress(
        "a",
        Some("a.test"),
        &[],
        "  tls: [{hosts: [a.test], secretName: a-cert}]\n",
    ));
    let lb = start_with(
        "l7-certs",
        &yaml,
        &["--default-ssl-certificate", "t/default-cert"],
    );
    let p = lb.https_port;
    // --default-ssl-certificate: names nobody configured get the Secret's certificate.
    let other = openssl_san(p, Some("unknown.test"));
    assert!(other.contains("DNS:fallback.test"), "{other}");
    assert!(openssl_san(p, Some("a.test")).contains("DNS:a.test"));

    // Both Secrets are replaced (renewals that add a name): new handshakes get the new
    // certificates without a restart, and a client keeps being served.
    let renewed = tls_secret_for("a-cert", &["a.test", "www.a.test"]);
    let renewed_default = tls_secret_for("default-cert", &["fallback.test", "renewed.test"]);
    let yaml = yaml
        .replace(&a_cert, &renewed)
        .replace(&default_cert, &renewed_default);
    lb._dir.write("m.yaml", &yaml);
    wait_until(Duration::from_secs(10), || {
        openssl_san(p, Some("a.test"))
            .contains("DNS:www.a.test")
            .then_some(())
    })
    .expect("the renewed certificate is served");
    let other = openssl_san(p, Some("unknown.test"));
    assert!(other.contains("DNS:renewed.test"), "{other}");
    assert_eq!(https_backend(p, "a.test"), "a");
}

#[test]
fn websocket_upgrade_is_passed_through() {
    let b = TestBackend::start("ws");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("ws", None, &[], ""));
    let lb = start("l7-ws", &yaml);
    let mut s = TcpStream::connect(("127.0.0.1", lb.lb.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read 101"), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"second frame", &[0x81, 0x05, 1, 2, 3, 4, 5]] {
        s.write_all(msg).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("echo");
        assert_eq!(got, msg);
    }
}

#[test]
fn sse_first_event_reaches_the_client_while_the_backend_is_still_sending() {
    let b = TestBackend::start("sse");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("sse", None, &[], ""));
    let lb = start("l7-sse", &yaml);
    let mut s = TcpStream::connect(("127.0.0.1", lb.lb.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: sse.test\r\n\r\n")
        .expect("request");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("data: first") {
        let n = s
            .read(&mut buf)
            .expect("first event before the backend goes on");
        assert!(n > 0, "closed before the first event: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // The backend sends the second event only after this point.
    assert!(!seen.contains("second"));
    b.gate.open();
    while !seen.contains("data: second") {
        let n = s.read(&mut buf).expect("second event");
        assert!(n > 0, "closed before the second event: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn round_robin_hashing_and_cookie_affinity() {
    let bs: Vec<TestBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| TestBackend::start(n))
        .collect();
    let refs: Vec<&TestBackend> = bs.iter().collect();
    let mut yaml = service(&refs);
    yaml.push_str(&ingress("rr", Some("rr.test"), &[], ""));
    yaml.push_str(&ingress(
        "hash",
        Some("hash.test"),
        &[("upstream-hash-by", "$http_x_user")],
        "",
    ));
    yaml.push_str(&ingress(
        "sticky",
        Some("sticky.test"),
        &[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/models"),
            ("session-cookie-max-age", "3600"),
        ],
        "",
    ));
    let lb = start("l7-balance", &yaml);
    let url = lb.lb.url("/");
    let backend_of = |args: &[&str]| -> String {
        let (status, _, body) = fetch(&[args, &[url.as_str()]].concat());
        assert_eq!(status, 200, "{body}");
        json(&body)["backend"].as_str().expect("backend").to_owned()
    };

    // Round robin: one worker, so exactly even.
    let before: Vec<u64> = bs.iter().map(|b| b.hits.load(Ordering::Relaxed)).collect();
    for _ in 0..30 {
        backend_of(&["-H", "Host: rr.test"]);
    }
    let spread: Vec<u64> = bs
        .iter()
        .zip(&before)
        .map(|(b, n)| b.hits.load(Ordering::Relaxed) - n)
        .collect();
    assert_eq!(spread, [10, 10, 10]);

    // Consistent hashing: each user always lands on the same backend; users spread.
    let mut seen = std::collections::HashSet::new();
    for user in 0..12 {
        let h = format!("X-User: user-{user}");
        let first = backend_of(&["-H", "Host: hash.test", "-H", &h]);
        for _ in 0..3 {
            assert_eq!(backend_of(&["-H", "Host: hash.test", "-H", &h]), first);
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "12 users all on one backend: {seen:?}");

    // Cookie affinity: the first answer sets the cookie, which then pins the backend.
    let (_, head, body) = fetch(&["-H", "Host: sticky.test", &url]);
    let pinned = json(&body)["backend"].as_str().expect("backend").to_owned();
    let set_cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("set-cookie");
    // (fetch gives the head lower-cased.)
    for attribute in ["path=/models", "max-age=3600", "httponly"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_owned();
    assert!(cookie.starts_with("route="), "{cookie}");
    for _ in 0..10 {
        assert_eq!(
            backend_of(&[
                "-H",
                "Host: sticky.test",
                "-H",
                &format!("Cookie: {cookie}")
            ]),
            pinned
        );
    }
}

/// A backend that answers every request with 503 (and keeps the connection).
fn always_503() -> u16 {
    always_503_after(Duration::ZERO)
}

/// [`always_503`], answering each request `delay` after it arrived.
fn always_503_after(delay: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // Requests without a body (GET, and the empty POST below).
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        std::thread::sleep(delay);
                        let answer =
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy";
                        if s.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn statuses_in_proxy_next_upstream_are_retried_for_idempotent_requests() {
    let good = TestBackend::start("good");
    let bad = always_503();
    let mut yaml = service_on(&[good.addr.port(), bad]);
    yaml.push_str(&ingress(
        "retry",
        Some("retry.test"),
        &[
            ("proxy-next-upstream", "error timeout http_503"),
            ("proxy-next-upstream-tries", "2"),
        ],
        "",
    ));
    yaml.push_str(&ingress("plain", Some("plain.test"), &[], ""));
    let lb = start("l7-next-upstream", &yaml);
    let url = lb.lb.url("/");
    // Round robin sends every other request to the 503 backend. Without http_503 in the
    // list (the default "error timeout"), the 503 is the answer.
    let statuses: Vec<u16> = (0..4)
        .map(|_| fetch(&["-H", "Host: plain.test", &url]).0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    // A POST is not idempotent: never sent twice, even with http_503 in the list.
    let statuses: Vec<u16> = (0..4)
        .map(|_| fetch(&["-X", "POST", "-H", "Host: retry.test", &url]).0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    // With it, each GET that meets the 503 backend is retried on the good one (the
    // failures also eject that endpoint for a while, as they should).
    for i in 0..10 {
        let (status, _, body) = fetch(&["-H", "Host: retry.test", &url]);
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(json(&body)["backend"], "good");
    }
}

#[test]
fn retries_that_run_out_of_time_or_endpoints_pass_the_last_response_on() {
    let good = TestBackend::start("good");
    let slow = always_503_after(Duration::from_millis(400));
    let bad = always_503();
    let refused = free_port();
    let mut yaml = service_on(&[good.addr.port(), slow]);
    yaml.push_str(&ingress(
        "deadline",
        Some("deadline.test"),
        &[
            ("proxy-next-upstream", "error timeout http_503"),
            ("proxy-next-upstream-tries", "2"),
            ("proxy-next-upstream-timeout", "200ms"),
        ],
        "",
    ));
    yaml.push_str(&service_named("svc2", &[bad, refused]));
    yaml.push_str(&ingress_to(
        "svc2",
        "exhausted",
        Some("exhausted.test"),
        &[
            ("proxy-next-upstream", "error timeout http_503"),
            ("proxy-next-upstream-tries", "2"),
        ],
        "",
    ));
    let lb = start("l7-next-upstream-last", &yaml);
    let url = lb.lb.url("/");
    // The slow endpoint's 503 comes after proxy-next-upstream-timeout: not retried, and
    // the client gets that 503 (not a 502 of the proxy's own).
    let answers: Vec<(u16, String)> = (0..4)
        .map(|_| {
            let (status, _, body) = fetch(&["-H", "Host: deadline.test", &url]);
            (status, body)
        })
        .collect();
    let busy = answers
        .iter()
        .filter(|(s, b)| *s == 503 && b == "busy")
        .count();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((busy, ok), (2, 2), "{answers:?}");
    // One endpoint answers 503, the other refuses connections: whichever comes first, the
    // backend's 503 is the answer.
    for i in 0..4 {
        let (status, _, body) = fetch(&["-H", "Host: exhausted.test", &url]);
        assert_eq!((status, body.as_str()), (503, "busy"), "request {i}");
    }
}

/// A port that takes no new connection: a listener with a backlog of 0 whose one queued
/// connection is never accepted, so the kernel drops further SYNs (accept queue full) and a
/// connect hangs. Loopback only. Dropping the guard closes both sockets.
struct Blackhole {
    port: u16,
    _rt: tokio::runtime::Runtime,
    _listener: tokio::net::TcpListener,
    _queued: TcpStream,
}

fn blackhole() -> Blackhole {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let listener = {
        let _in_rt = rt.enter();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        socket.listen(0).expect("listen")
    };
    let port = listener.local_addr().expect("addr").port();
    let queued = TcpStream::connect(("127.0.0.1", port)).expect("fills the accept queue");
    Blackhole {
        port,
        _rt: rt,
        _listener: listener,
        _queued: queued,
    }
}

#[test]
fn proxy_connect_timeout_gives_up_and_moves_on() {
    let hole = blackhole();
    let good = TestBackend::start("good");
    // Alone: the connect times out after 300 ms (not the 5 s default, which curl's 5 s
    // limit in `fetch` would not wait for) and the answer is 504.
    let mut yaml = service_on(&[hole.port]);
    yaml.push_str(&ingress(
        "alone",
        Some("alone.test"),
        &[("proxy-connect-timeout", "300ms")],
        "",
    ));
    // Beside a working endpoint: a connect timeout is a "timeout" for proxy-next-upstream
    // (in the default list), so the request goes on to the other endpoint.
    yaml.push_str(&service_named("svc2", &[hole.port, good.addr.port()]));
    yaml.push_str(&ingress_to(
        "svc2",
        "pair",
        Some("pair.test"),
        &[("proxy-connect-timeout", "300ms")],
        "",
    ));
    let lb = start("l7-connect-timeout", &yaml);
    let url = lb.lb.url("/");
    let (status, _, body) = fetch(&["-H", "Host: alone.test", &url]);
    assert_eq!((status, body.as_str()), (504, "upstream timed out\n"));
    for i in 0..4 {
        let (status, _, body) = fetch(&["-H", "Host: pair.test", &url]);
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(json(&body)["backend"], "good");
    }
}

#[test]
fn a_backend_dying_mid_test_fails_no_idempotent_request() {
    let mut bs: Vec<TestBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| TestBackend::start(n))
        .collect();
    let refs: Vec<&TestBackend> = bs.iter().collect();
    let mut yaml = service(&refs);
    yaml.push_str(&ingress("r", None, &[], ""));
    let lb = start("l7-retry", &yaml);
    let url = lb.lb.url("/");
    for _ in 0..30 {
        assert_eq!(fetch(&[&url]).0, 200);
    }
    bs[1].stop();
    let dead_hits = bs[1].hits.load(Ordering::Relaxed);
    for i in 0..150 {
        let (status, _, body) = fetch(&[&url]);
        assert_eq!(status, 200, "request {i} after the backend died: {body}");
        assert_ne!(json(&body)["backend"], "b");
    }
    assert_eq!(bs[1].hits.load(Ordering::Relaxed), dead_hits);
    // Ejected, not retried on every request: the others took everything.
    let alive: u64 = [&bs[0], &bs[2]]
        .iter()
        .map(|b| b.hits.load(Ordering::Relaxed))
        .sum();
    assert!(alive >= 170, "{alive}");
}

#[test]
fn limits_and_smuggling_attempts() {
    let b = TestBackend::start("a");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress(
        "small",
        Some("small.test"),
        &[("proxy-body-size", "1k")],
        "",
    ));
    yaml.push_str(&ingress("any", None, &[], ""));
    let lb = start("l7-limits", &yaml);
    let port = lb.lb.http_port;
    let status = |resp: &str| -> u16 {
        resp.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {resp:?}"))
    };
    let head_done = |r: &str| r.contains("\r\n\r\n");

    // Too many header lines, and a too large head: 431.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a.test\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status(&raw(port, many.as_bytes(), head_done)), 431);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(40_000)
    );
    assert_eq!(status(&raw(port, big.as_bytes(), head_done)), 431);

    // Conflicting Content-Length values, and a Transfer-Encoding that is not chunked: 400
    // (from hyper's parser, before anything is routed).
    let before = b.hits.load(Ordering::Relaxed);
    let dup =
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc";
    assert_eq!(status(&raw(port, dup, head_done)), 400);
    let te = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nabc";
    assert_eq!(status(&raw(port, te, head_done)), 400);

    // CL + TE, in either order: 400 and the connection closed (RFC 9112 6.1), without
    // forwarding the request or the one hidden after its chunked body.
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        // A keep-alive request first: the refusal is aimed at the right request.
        let smuggle = format!(
            "GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n\
             POST / HTTP/1.1\r\nHost: a.test\r\n{framing}\r\n\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        // Read until the proxy closes the connection.
        let resp = raw(port, smuggle.as_bytes(), |_| false);
        let statuses: Vec<&str> = resp
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &resp[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "400"], "{resp}");
        assert!(resp.contains("\"path\":\"/first\""), "{resp}");
        assert!(!resp.contains("/smuggled"), "{resp}");
    }
    // Of all these, only the two /first requests reached the backend.
    assert_eq!(b.hits.load(Ordering::Relaxed), before + 2);

    // proxy-body-size: 413 from the Content-Length, before anything goes upstream.
    let body = "x".repeat(2048);
    let (code, _, _) = fetch(&[
        "-H",
        "Host: small.test",
        "--data-binary",
        &body,
        &lb.lb.url("/upload"),
    ]);
    assert_eq!(code, 413);
    // A chunked body over the limit is cut off too.
    let (code, _, _) = fetch(&[
        "-H",
        "Host: small.test",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &body,
        &lb.lb.url("/upload"),
    ]);
    assert_eq!(code, 413);
    let (code, _, out) = fetch(&[
        "-H",
        "Host: small.test",
        "--data-binary",
        "hello",
        &lb.lb.url("/upload"),
    ]);
    assert_eq!((code, out.as_str()), (200, "5"));
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_100_mb_upload_streams_through_with_proxy_memory_bounded() {
    let b = TestBackend::start("sink");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("up", None, &[("proxy-body-size", "0")], ""));
    let lb = start("l7-upload", &yaml);
    let dir = TempDir::new("l7-upload-data");
    let file = dir.0.join("100mb.bin");
    let f = std::fs::File::create(&file).expect("create");
    f.set_len(100 * 1024 * 1024).expect("100 MB file");
    let pid = lb.lb.child.pid().expect("pid");
    let before = vm_hwm_kib(pid);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(lb.lb.url("/upload"))
        .output()
        .expect("curl upload");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (100u64 * 1024 * 1024).to_string()
    );
    let after = vm_hwm_kib(pid);
    // Streaming: the peak grows by buffers, not by the body (100 MB).
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "proxy peak RSS grew {} KiB during a 100 MB upload",
        after - before
    );
}

#[test]
fn limit_connections_counts_requests_in_flight_per_client() {
    let b = TestBackend::start("slow");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("conns", None, &[("limit-connections", "1")], ""));
    let lb = start("l7-limit-connections", &yaml);
    // A server-sent event stream that stays open until the gate opens: in flight for as
    // long as it streams, not only until its response head.
    let sse_url = lb.lb.url("/sse");
    let held = std::thread::spawn(move || fetch(&[&sse_url]));
    wait_until(Duration::from_secs(10), || {
        (b.hits.load(Ordering::Relaxed) > 0).then_some(())
    })
    .expect("the stream reached the backend");
    let url = lb.lb.url("/");
    // The same client's second request while the first is in flight: refused.
    assert_eq!(fetch(&[&url]).0, 503);
    // Another client has its own count.
    assert_eq!(fetch(&["--interface", "127.0.0.2", &url]).0, 200);
    b.gate.open();
    let (status, _, body) = held.join().expect("client thread");
    assert_eq!(status, 200);
    assert_eq!(body, "data: first\n\ndata: second\n\n");
    // The slot is free again once the stream has ended.
    wait_until(Duration::from_secs(5), || {
        (fetch(&[&url]).0 == 200).then_some(())
    })
    .expect("a request after the stream ended");
}

#[test]
fn graceful_shutdown_lets_the_request_in_flight_finish() {
    let b = TestBackend::start("slow");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("g", None, &[], ""));
    let mut lb = start("l7-shutdown", &yaml);
    let url = lb.lb.url("/gate");
    let client = std::thread::spawn(move || fetch(&[&url]));
    wait_until(Duration::from_secs(10), || {
        (b.hits.load(Ordering::Relaxed) > 0).then_some(())
    })
    .expect("request reached the backend");
    let pid = i32::try_from(lb.lb.child.pid().expect("pid")).expect("pid fits");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // New connections are refused once the listeners close.
    let port = lb.lb.http_port;
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .expect("listener closed after SIGTERM");
    b.gate.open();
    let (status, _, body) = client.join().expect("client thread");
    assert_eq!((status, body.as_str()), (200, "slow after gate"));
    let exit = lb
        .lb
        .child
        .signal_and_wait(0, Duration::from_secs(15))
        .expect("exits after draining");
    assert!(exit.success(), "{exit:?}");
}

/// One gRPC message: compression flag, big-endian length, payload.
fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn grpc_server_streaming_with_trailers_over_h2c_both_ways() {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let b = TestBackend::start("grpc");
    // A shadow of the gRPC service (mirror-target): it must get the copy over HTTP/2.
    let shadow = TestBackend::start("shadow");
    let mut yaml = service(&[&b]);
    let mirror = format!("http://{}$request_uri", shadow.addr);
    yaml.push_str(&ingress(
        "g",
        Some("grpc.test"),
        &[("backend-protocol", "GRPC"), ("mirror-target", &mirror)],
        "",
    ));
    let lb = start("l7-grpc", &yaml);
    let port = lb.lb.http_port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (data, trailers, content_type) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        let req = hyper::Request::post("http://grpc.test/grpc.Test/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(bytes::Bytes::from(grpc_frame(b"ping"))))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers().get("content-type").cloned();
        let mut body = resp.into_body();
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            if let Some(d) = frame.data_ref() {
                data.extend_from_slice(d);
            } else if let Ok(t) = frame.into_trailers() {
                trailers = Some(t);
            }
        }
        (data, trailers, ct)
    });
    assert_eq!(content_type.expect("content-type"), "application/grpc");
    assert_eq!(
        data,
        [
            grpc_frame(b"ping"),
            grpc_frame(b"ping"),
            grpc_frame(b"ping")
        ]
        .concat()
    );
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    assert!(
        wait_until(Duration::from_secs(5), || {
            (shadow.h2_hits.load(Ordering::Relaxed) == 1).then_some(())
        })
        .is_some(),
        "the shadow got the call over HTTP/2 ({} requests in all)",
        shadow.hits.load(Ordering::Relaxed)
    );
}

/// The manifests file flips between two versions every 10 ms while 10k requests run: none
/// fails. The directory watcher debounces such a burst into about one route table a
/// second, so which versions got published is timing; `publish::tests::
/// route_tables_published_every_10ms_fail_no_request` publishes every 10 ms in-process.
#[test]
fn manifests_rewritten_every_10ms_during_10k_requests_fail_none() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;

    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let one = {
        let mut y = service(&[&a]);
        y.push_str(&ingress("swap", None, &[], ""));
        y
    };
    let two = {
        let mut y = service(&[&a, &b]);
        y.push_str(&ingress("swap", None, &[("load-balance", "ewma")], ""));
        y
    };
    let lb = start("l7-swaps", &one);
    let dir = lb._dir.0.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            // Bounded: at most 60 s of rewrites.
            while !stop.load(Ordering::Relaxed) && n < 6000 {
                let text = if n.is_multiple_of(2) { &two } else { &one };
                let tmp = dir.join(".m.yaml.tmp");
                std::fs::write(&tmp, text).expect("write");
                std::fs::rename(&tmp, dir.join("m.yaml")).expect("rename");
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        })
    };
    let port = lb.lb.http_port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failures = rt.block_on(async move {
        let mut failures = Vec::new();
        // 8 keep-alive connections x 1250 requests.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                let mut bad = Vec::new();
                for i in 0..1250 {
                    let req = hyper::Request::get("/swap")
                        .header("host", "swap.test")
                        .body(Empty::<bytes::Bytes>::new())
                        .expect("request");
                    match send.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                            if status != 200 || body.is_err() {
                                bad.push(format!("request {i}: {status} {body:?}"));
                            }
                        }
                        Err(e) => {
                            bad.push(format!("request {i}: {e}"));
                            break;
                        }
                    }
                }
                bad
            }));
        }
        for t in tasks {
            failures.extend(t.await.expect("client task"));
        }
        failures
    });
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().expect("writer");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        rewrites > 10,
        "the manifests were rewritten {rewrites} times"
    );
    drop(b);
}

/// A backend that reads request heads and then stops reading: it holds each connection
/// (without answering) until `release` is dropped, 60 s at most.
fn stalled_backend() -> (u16, std::sync::mpsc::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let mut held = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < until {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                held.push(conn);
            }
            match released.recv_timeout(Duration::from_millis(20)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
    });
    (port, release)
}

#[test]
fn proxy_send_timeout_gives_up_on_a_backend_that_stops_reading() {
    let (port, _release) = stalled_backend();
    let mut yaml = service_on(&[port]);
    yaml.push_str(&ingress(
        "send",
        None,
        // The read timeout (which also bounds the wait for the response head) is far
        // beyond this test's 30 s: only the send timeout can answer in time.
        &[
            ("proxy-send-timeout", "1s"),
            ("proxy-read-timeout", "300s"),
            ("proxy-body-size", "0"),
        ],
        "",
    ));
    let lb = start("l7-send-timeout", &yaml);
    // An upload far larger than the socket buffers between proxy and backend.
    let total: u64 = 512 * 1024 * 1024;
    let mut s = TcpStream::connect(("127.0.0.1", lb.lb.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: send.test\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    )
    .expect("head");
    let mut writer_side = s.try_clone().expect("clone");
    writer_side
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    let writer = std::thread::spawn(move || {
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < total {
            match writer_side.write(&chunk) {
                Ok(n) if n > 0 => sent += n as u64,
                _ => break,
            }
        }
        sent
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no response while the backend held the upload: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 504 "), "{head}");
    // The proxy stops taking the upload too: the client's writes end before all of it.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().expect("writer");
    assert!(sent < total, "the whole upload was taken");
}

#[test]
fn slow_headers_and_silent_connections_are_closed_at_the_client_header_timeout() {
    let b = TestBackend::start("a");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("slow", None, &[], ""));
    let lb = start_with("l7-slowloris", &yaml, &["--client-header-timeout", "1s"]);
    let port = lb.lb.http_port;

    /// Sends `start`, then the bytes of `dribble` one every 100 ms, then nothing, for 30 s
    /// at most (the request head never completes); whether the proxy closed the
    /// connection meanwhile, and what it answered.
    fn dribble(port: u16, start: &[u8], dribble: &[u8]) -> (bool, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s.write_all(start).expect("start");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        for i in 0..300 {
            match s.read(&mut buf) {
                Ok(0) => return (true, got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (true, got),
            }
            if let Some(byte) = dribble.get(i)
                && s.write_all(&[*byte]).is_err()
            {
                return (true, got);
            }
        }
        (false, got)
    }

    // 300 bytes at 10 per second would take 30 s: the proxy closes the connection first,
    // without a response (as nginx) and without routing anything.
    let slow_header = format!("X-Slow: {}", "a".repeat(292));
    for (what, start, rest) in [
        (
            "a header line a byte at a time",
            &b"GET / HTTP/1.1\r\nHost: a.test\r\n"[..],
            slow_header.as_bytes(),
        ),
        ("nothing at all", &b""[..], &b""[..]),
        // Before the plain port knows HTTP/1 from h2 (hyper's own timer is not running).
        (
            "most of the h2 preface a byte at a time",
            &b""[..],
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n"[..],
        ),
    ] {
        let (closed, answer) = dribble(port, start, rest);
        assert!(closed, "{what}: still open after 30 s");
        assert!(
            answer.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(b.hits.load(Ordering::Relaxed), 0);
    // Prompt clients are served as before.
    assert_eq!(fetch(&["-H", "Host: a.test", &lb.lb.url("/")]).0, 200);
}

#[test]
fn h2_rapid_reset_is_cut_off_before_the_streams_reach_the_backend() {
    let b = TestBackend::start("a");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("rr", None, &[], ""));
    let lb = start("l7-rapid-reset", &yaml);
    let port = lb.lb.http_port;
    const STREAMS: u32 = 5000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (opened, ended) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
        let conn = tokio::spawn(conn);
        // HEADERS then RST_STREAM, as fast as the client allows, bounded in count and time.
        let mut client = Some(client);
        let mut opened = 0u32;
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while opened < STREAMS && tokio::time::Instant::now() < until {
            let Some(c) = client.take() else { break };
            let mut c = match tokio::time::timeout(Duration::from_secs(5), c.ready()).await {
                Ok(Ok(c)) => c,
                _ => break,
            };
            let req = http::Request::get(format!("http://rr.test/reset/{opened}"))
                .body(())
                .expect("request");
            let Ok((_response, mut stream)) = c.send_request(req, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            opened += 1;
            client = Some(c);
            if opened.is_multiple_of(100) {
                // Let the connection task flush, and read what the proxy says.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The client stays open: only the proxy can end the connection.
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        drop(client);
        (opened, ended)
    });
    let error = match ended {
        Ok(Ok(Err(e))) => e,
        other => panic!("the connection was not closed by the proxy: {other:?}"),
    };
    // GOAWAY (ENHANCE_YOUR_CALM), or the socket closed under the client's writes.
    assert!(
        (error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM))
            || error.is_io(),
        "{error:?}"
    );
    // Cut off early: the client could not open all its streams.
    assert!(opened < STREAMS, "{opened} streams opened and reset");
    // The proxy still serves, and of the streams the client opened, few reached the
    // backend (those the proxy had accepted before their reset arrived).
    assert_eq!(fetch(&["--http2-prior-knowledge", &lb.lb.url("/")]).0, 200);
    let forwarded = b.hits.load(Ordering::Relaxed) - 1;
    assert!(
        forwarded * 10 < u64::from(opened),
        "{forwarded} of {opened} reset streams were forwarded"
    );
}

/// gRPC over tonic with a hand-written codec (UTF-8 strings as messages: gRPC does not
/// care what the payload is, and no protoc is needed) and service (`test.Echo`).
mod grpc {
    use std::{
        convert::Infallible,
        future::Future,
        net::SocketAddr,
        pin::Pin,
        task::{Context, Poll},
    };

    use bytes::{Buf as _, BufMut as _};
    use tonic::{
        Status,
        codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    };

    #[derive(Clone, Copy, Debug, Default)]
    pub struct Utf8;

    impl Codec for Utf8 {
        type Encode = String;
        type Decode = String;
        type Encoder = Utf8;
        type Decoder = Utf8;

        fn encoder(&mut self) -> Utf8 {
            Utf8
        }

        fn decoder(&mut self) -> Utf8 {
            Utf8
        }
    }

    impl Encoder for Utf8 {
        type Item = String;
        type Error = Status;

        fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(item.as_bytes());
            Ok(())
        }
    }

    impl Decoder for Utf8 {
        type Item = String;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        }
    }

    type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

    /// `Unary`: "hello NAME" (NAME "missing": NOT_FOUND); `Stream`: three numbered replies.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Echo;

    struct Unary;

    impl tonic::server::UnaryService<String> for Unary {
        type Response = String;
        type Future = BoxFuture<Result<tonic::Response<String>, Status>>;

        fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
            let name = request.into_inner();
            Box::pin(async move {
                if name == "missing" {
                    Err(Status::not_found("no such model: missing"))
                } else {
                    Ok(tonic::Response::new(format!("hello {name}")))
                }
            })
        }
    }

    struct Stream;

    type Replies = futures::stream::Iter<std::vec::IntoIter<Result<String, Status>>>;

    impl tonic::server::ServerStreamingService<String> for Stream {
        type Response = String;
        type ResponseStream = Replies;
        type Future = BoxFuture<Result<tonic::Response<Replies>, Status>>;

        fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
            let name = request.into_inner();
            let replies: Vec<Result<String, Status>> =
                (1..=3).map(|i| Ok(format!("{name} #{i}"))).collect();
            Box::pin(async move { Ok(tonic::Response::new(futures::stream::iter(replies))) })
        }
    }

    impl tower_service::Service<http::Request<tonic::body::Body>> for Echo {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(Utf8);
                Ok(match req.uri().path() {
                    "/test.Echo/Unary" => grpc.unary(Unary, req).await,
                    "/test.Echo/Stream" => grpc.server_streaming(Stream, req).await,
                    _ => Status::unimplemented("no such method").into_http(),
                })
            })
        }
    }

    /// A tonic server (h2c) on a free loopback port, until the runtime ends.
    pub async fn serve() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        tokio::spawn(
            tonic::transport::Server::builder().serve_with_incoming(Echo, Box::pin(incoming)),
        );
        addr
    }

    /// The unary and server-streaming calls through `channel`.
    pub async fn calls(channel: tonic::transport::Channel) -> (String, Status, Vec<String>) {
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.expect("ready");
        let hello = client
            .unary(
                tonic::Request::new("gRPC".to_owned()),
                http::uri::PathAndQuery::from_static("/test.Echo/Unary"),
                Utf8,
            )
            .await
            .expect("unary call")
            .into_inner();
        client.ready().await.expect("ready");
        let missing = client
            .unary(
                tonic::Request::new("missing".to_owned()),
                http::uri::PathAndQuery::from_static("/test.Echo/Unary"),
                Utf8,
            )
            .await
            .expect_err("NOT_FOUND");
        client.ready().await.expect("ready");
        let mut stream = client
            .server_streaming(
                tonic::Request::new("tokens".to_owned()),
                http::uri::PathAndQuery::from_static("/test.Echo/Stream"),
                Utf8,
            )
            .await
            .expect("streaming call")
            .into_inner();
        let mut replies = Vec::new();
        while let Some(reply) = stream.message().await.expect("stream message") {
            replies.push(reply);
        }
        (hello, missing, replies)
    }
}

#[test]
fn grpc_with_tonic_unary_errors_and_server_streaming_over_h2c_and_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = rt.block_on(grpc::serve());
    let mut yaml = service_on(&[backend.port()]);
    let (_, crt, key) = lb_userspace::tls::self_signed(&["grpcs.test"]).expect("self-signed");
    let indent = |s: &str| -> String { s.lines().map(|l| format!("    {l}\n")).collect() };
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: grpc-cert, namespace: t}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&crt),
        indent(&key)
    ));
    yaml.push_str(&ingress(
        "grpc",
        Some("grpc.test"),
        &[("backend-protocol", "GRPC")],
        "",
    ));
    yaml.push_str(&ingress(
        "grpcs",
        Some("grpcs.test"),
        &[("backend-protocol", "GRPC")],
        "  tls: [{hosts: [grpcs.test], secretName: grpc-cert}]\n",
    ));
    let lb = start("l7-tonic", &yaml);
    let (http, https) = (lb.lb.http_port, lb.https_port);
    let results = rt.block_on(async move {
        // h2c with prior knowledge (tonic's plain-text channel), :authority grpc.test.
        let plain = Endpoint::from_shared(format!("http://127.0.0.1:{http}"))
            .expect("endpoint")
            .origin("http://grpc.test".parse().expect("origin"))
            .connect()
            .await
            .expect("h2c channel");
        // h2 over TLS, ALPN h2, the certificate of grpcs.test checked against its CA.
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&crt))
            .domain_name("grpcs.test");
        let secure = Endpoint::from_shared(format!("https://127.0.0.1:{https}"))
            .expect("endpoint")
            .origin("https://grpcs.test".parse().expect("origin"))
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("TLS channel");
        [grpc::calls(plain).await, grpc::calls(secure).await]
    });
    for (hello, missing, replies) in results {
        assert_eq!(hello, "hello gRPC");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        assert_eq!(missing.message(), "no such model: missing");
        assert_eq!(replies, ["tokens #1", "tokens #2", "tokens #3"]);
    }
}

/// `ssl-passthrough`: a TLS connection for the passthrough host reaches the backend's own
/// TLS server unterminated (curl checks the backend's certificate, which the proxy does
/// not hold, so no proxy could have answered), while another host on the same port is
/// still terminated by the proxy. Counted in `ebpf_lb_ssl_passthrough_connections`. On
/// SIGTERM a relayed connection keeps working through the drain (its task holds a drain
/// watcher, as an HTTP connection does), after the listener has closed.
#[test]
fn ssl_passthrough_relays_tls_to_the_backend_by_sni() {
    let dir = TempDir::new("passthrough-tls");
    let (_, cert, key) = lb_userspace::tls::self_signed(&["vault.test"]).expect("cert");
    dir.write("c.pem", &cert);
    dir.write("k.pem", &key);
    let (cert_path, key_path) = (dir.0.join("c.pem"), dir.0.join("k.pem"));
    // `openssl s_server` in `mode` (-www: a status page; -rev: each line back reversed).
    let s_server = |mode: &str| {
        let port = free_port();
        let server = Command::new("openssl")
            .args(["s_server", "-quiet", mode, "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&cert_path)
            .arg("-key")
            .arg(&key_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let guard = tests::procs::ChildGuard::new("openssl s_server", server);
        wait_until(Duration::from_secs(5), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("s_server listening");
        (guard, port)
    };
    let (_www, tls_port) = s_server("-www");
    let (_rev, rev_port) = s_server("-rev");

    let b = TestBackend::start("plain");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress("plain", Some("plain.test"), &[], ""));
    yaml.push_str(&service_named("vault", &[tls_port]));
    yaml.push_str(&ingress_to(
        "vault",
        "vault",
        Some("vault.test"),
        &[("ssl-passthrough", "true")],
        "",
    ));
    yaml.push_str(&service_named("rev", &[rev_port]));
    yaml.push_str(&ingress_to(
        "rev",
        "rev",
        Some("rev.test"),
        &[("ssl-passthrough", "true")],
        "",
    ));
    let mut lb = start("passthrough", &yaml);
    let port = lb.https_port;

    let resolve = format!("vault.test:{port}:127.0.0.1");
    let url = format!("https://vault.test:{port}/");
    let page = curl(&[
        "--cacert",
        &cert_path.to_string_lossy(),
        "--resolve",
        &resolve,
        &url,
    ])
    .unwrap_or_else(|e| panic!("curl through the passthrough: {e}"));
    assert!(
        page.contains("s_server"),
        "the backend's own page: {page:?}"
    );
    // Another host on the same port: terminated here, served by the echo backend.
    assert_eq!(https_backend(port, "plain.test"), "plain");
    let metrics =
        curl(&[&format!("http://127.0.0.1:{}/metrics", lb.lb.admin_port)]).expect("metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("ebpf_lb_ssl_passthrough_connections_total{")
                && l.contains("ingress=\"vault\"")
                && l.contains("outcome=\"relayed\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );

    // A relayed connection open when the proxy is told to stop: it keeps working while
    // the proxy drains (the listener is closed by then).
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "rev.test", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut input = client.stdin.take().expect("stdin");
    let output = client.stdout.take().expect("stdout");
    let _client = tests::procs::ChildGuard::new("openssl s_client", client);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(output)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut echo = |word: &str| -> Option<String> {
        writeln!(input, "{word}").ok()?;
        input.flush().ok()?;
        lines.recv_timeout(Duration::from_secs(5)).ok()
    };
    assert_eq!(
        echo("hello").as_deref(),
        Some("olleh"),
        "relayed to s_server -rev"
    );
    let pid = lb
        .lb
        .child
        .pid()
        .and_then(|p| i32::try_from(p).ok())
        .expect("pid");
    // SAFETY: kill(2) on the proxy this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until(Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).err()
    })
    .expect("the HTTPS listener closed");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        echo("draining").as_deref(),
        Some("gniniard"),
        "the relay outlived the HTTP drain"
    );
    let _ = lb
        .lb
        .child
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
}

/// One request as the mirror saw it: request line, headers (lower-case names), body.
type Seen = (String, Vec<(String, String)>, Vec<u8>);

/// A bare HTTP/1.1 server on `listener` recording each request it answers (200, empty).
fn recording_server(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<Seen> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if std::io::BufRead::read_line(&mut r, &mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        match h.trim_end().split_once(':') {
                            Some((k, v)) => {
                                headers.push((k.to_ascii_lowercase(), v.trim().to_owned()))
                            }
                            None => break,
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = r
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    if tx
                        .send((line.trim_end().to_owned(), headers, body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    rx
}

/// `mirror-target`: each request is also sent, with its body, to the mirror (Host from
/// `mirror-host`, the client's path and query for `$request_uri`) while the client gets the
/// backend's answer; `mirror-request-body: "off"` sends the copy without its body; a
/// mirror that is down costs the client nothing. Counted in `ebpf_lb_mirror_requests`.
#[test]
fn mirror_target_copies_requests_with_their_bodies() {
    let b = TestBackend::start("main");
    let mirror = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mport = mirror.local_addr().expect("addr").port();
    let seen = recording_server(mirror);
    let down = free_port();
    let mut yaml = service(&[&b]);
    let target = format!("http://127.0.0.1:{mport}$request_uri");
    let ing = |name: &str, host: &str, ann: &[(&str, &str)]| ingress(name, Some(host), ann, "");
    yaml.push_str(&ing(
        "shadowed",
        "shadow.test",
        &[
            ("mirror-target", &target),
            ("mirror-host", "shadow.internal"),
        ],
    ));
    yaml.push_str(&ing(
        "headonly",
        "head.test",
        &[("mirror-target", &target), ("mirror-request-body", "off")],
    ));
    let down_target = format!("http://127.0.0.1:{down}$request_uri");
    yaml.push_str(&ing(
        "mirrordown",
        "down.test",
        &[("mirror-target", &down_target)],
    ));
    let lb = start("mirror", &yaml);
    let url = |host: &str, path: &str| {
        format!("http://{host}:{}{path}", lb.lb.http_port)
            .replace(&format!("{host}:"), "127.0.0.1:")
    };
    let post = |host: &str, path: &str, body: &str, chunked: bool| {
        let mut args = vec!["-H".to_owned(), format!("Host: {host}")];
        if chunked {
            args.extend(["-H".to_owned(), "Transfer-Encoding: chunked".to_owned()]);
        }
        args.extend(["--data-binary".to_owned(), body.to_owned(), url(host, path)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args).expect("curl")
    };
    let next = || {
        seen.recv_timeout(Duration::from_secs(5))
            .expect("the mirror got the copy")
    };
    let header = |s: &Seen, name: &str| {
        s.1.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };

    // A prediction: the backend counts the body; the mirror gets the same request.
    let body = r#"{"instances": [[1.0, 2.0, 3.0]]}"#;
    let answer = post("shadow.test", "/upload?model=m", body, false);
    assert_eq!(
        answer,
        body.len().to_string(),
        "the backend got the whole body"
    );
    let s = next();
    assert_eq!(s.0, "POST /upload?model=m HTTP/1.1");
    assert_eq!(header(&s, "host"), "shadow.internal");
    assert_eq!(header(&s, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(s.2, body.as_bytes());
    // Chunked from the client: copied whole, with a Content-Length.
    let big = "x".repeat(100_000);
    assert_eq!(post("shadow.test", "/upload", &big, true), "100000");
    let s = next();
    assert_eq!(
        (s.0.as_str(), s.2.len()),
        ("POST /upload HTTP/1.1", 100_000)
    );
    // A GET: copied at once.
    let (status, _, _) = fetch(&["-H", "Host: shadow.test", &url("shadow.test", "/health")]);
    assert_eq!(status, 200);
    assert_eq!(next().0, "GET /health HTTP/1.1");
    // mirror-request-body off: the head only; the target's own authority as Host.
    assert_eq!(post("head.test", "/upload", "payload", false), "7");
    let s = next();
    assert_eq!(s.0, "POST /upload HTTP/1.1");
    assert_eq!(header(&s, "host"), format!("127.0.0.1:{mport}"));
    assert!(s.2.is_empty());
    // A mirror that is down: the client is served all the same.
    assert_eq!(post("down.test", "/upload", "abc", false), "3");

    let metrics_url = format!("http://127.0.0.1:{}/metrics", lb.lb.admin_port);
    let counted = |ingress: &str, outcome: &str| {
        let m = curl(&[&metrics_url]).expect("metrics");
        m.lines()
            .find(|l| {
                l.starts_with("ebpf_lb_mirror_requests_total{")
                    && l.contains(&format!("ingress=\"{ingress}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(5), || (counted("shadowed", "sent")
            == Some(3)
            && counted("headonly", "sent") == Some(1)
            && counted("mirrordown", "failed") == Some(1))
        .then_some(()))
        .is_some(),
        "{:?}",
        curl(&[&metrics_url])
    );
}

/// `limit-rate` / `limit-rate-after`: the response arrives whole and in order through the
/// pacing (streamed by the backend in 16 KiB frames, cut into pieces by the pacing), and
/// not sooner than the rate allows. Only that lower bound is checked (pacing makes a
/// response slower, never faster, so a slow machine cannot fail it); the exact schedule
/// is checked in virtual time by `policy::throttle`'s tests.
#[test]
fn limit_rate_paces_responses_and_delivers_them_whole() {
    let b = TestBackend::start("big");
    let mut yaml = service(&[&b]);
    yaml.push_str(&ingress(
        "paced",
        Some("paced.test"),
        &[("limit-rate", "100"), ("limit-rate-after", "20")],
        "",
    ));
    let lb = start("limit-rate", &yaml);
    // 20 KiB free, then 50 KiB at 100 KiB/s in 10 KiB pieces: the last one at 0.4 s.
    let n = 70 * 1024;
    let url = format!("http://127.0.0.1:{}/bytes/{n}", lb.lb.http_port);
    let started = std::time::Instant::now();
    let body = curl(&["-H", "Host: paced.test", &url]).expect("curl");
    let took = started.elapsed();
    let want: String = (0..n).map(|i| char::from(b"0123456789"[i % 10])).collect();
    assert_eq!(body.len(), n);
    assert!(body == want, "the body arrived whole and in order");
    assert!(took >= Duration::from_millis(350), "paced: {took:?}");
}
