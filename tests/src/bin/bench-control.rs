//! `cargo xtask bench control`: the control plane's numbers.
//!
//! 1. Translation + publish time and memory for 1k and 10k Ingresses with 50k endpoints,
//!    beside nginx's own configuration check (`nginx -t`) of an equivalent configuration
//!    (one server per host, one location per path, one upstream per Service): the least an
//!    nginx reload costs. Medians of runs, with min and max.
//! 2. Time from a changed manifest file to the new route serving traffic.
//! 3. Failed requests while the configuration changes continuously (must be 0).
//!
//! Writes target/bench/control.json.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use lb_userspace::{
    provider::{Snapshot, files::load_text},
    routes::RouteStore,
    translate::{ClassFilter, translate},
};
use tests::local::{LocalLb, TempDir, start_backend};

#[derive(Parser)]
struct Args {
    /// Runs per measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The ebpf-lb binary.
    #[arg(long)]
    ebpf_lb: PathBuf,
    /// The echo-backend binary.
    #[arg(long)]
    backend: PathBuf,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/control.json")]
    out: PathBuf,
}

const ENDPOINTS: usize = 50_000;

/// `n` Ingresses over `n/10` Services (each with its share of 50k endpoints), 2 paths each.
fn manifests(n: usize) -> String {
    let services = (n / 10).max(1);
    let per_service = ENDPOINTS / services;
    let mut s = String::with_capacity(n * 600 + ENDPOINTS * 40);
    for svc in 0..services {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{svc}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{svc}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc{svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        );
        for e in 0..per_service {
            let i = svc * per_service + e;
            let _ = writeln!(
                s,
                "- addresses: [\"198.{}.{}.{}\"]",
                18 + (i >> 16) % 2,
                (i >> 8) & 255,
                i & 255
            );
        }
    }
    for i in 0..n {
        let svc = i % services;
        let _ = write!(
            s,
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: ing{i}, namespace: bench}}\nspec:\n  ingressClassName: ebpf-lb\n  rules:\n  - host: h{i}.bench.example\n    http:\n      paths:\n      - {{path: /api, pathType: Prefix, backend: {{service: {{name: svc{svc}, port: {{number: 80}}}}}}}}\n      - {{path: /v2/models/m{i}/infer, pathType: Exact, backend: {{service: {{name: svc{svc}, port: {{number: 80}}}}}}}}\n"
        );
    }
    s
}

/// The equivalent nginx configuration.
fn nginx_conf(n: usize, dir: &Path) -> String {
    let services = (n / 10).max(1);
    let per_service = ENDPOINTS / services;
    let mut s = format!(
        "worker_processes 1;\npid {}/nginx.pid;\nerror_log {}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 128;\n",
        dir.display(),
        dir.display()
    );
    for svc in 0..services {
        let _ = writeln!(s, "  upstream svc{svc} {{");
        for e in 0..per_service {
            let i = svc * per_service + e;
            let _ = writeln!(
                s,
                "    server 198.{}.{}.{}:8080;",
                18 + (i >> 16) % 2,
                (i >> 8) & 255,
                i & 255
            );
        }
        let _ = writeln!(s, "    keepalive 32;\n  }}");
    }
    for i in 0..n {
        let svc = i % services;
        let _ = writeln!(
            s,
            "  server {{ listen 127.0.0.1:1; server_name h{i}.bench.example;\n    location /api {{ proxy_pass http://svc{svc}; }}\n    location = /v2/models/m{i}/infer {{ proxy_pass http://svc{svc}; }} }}"
        );
    }
    s.push_str("}\n");
    s
}

/// Counts heap bytes in use and their peak: the memory figures are what translation
/// allocates, not RSS (which allocator reuse and page granularity blur). Costs two relaxed
/// atomics per allocation, in every run alike.
struct CountingAlloc;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's arguments; the
// counters are only statistics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(size: usize) {
    let now = HEAP_NOW.fetch_add(size, Ordering::Relaxed) + size;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Heap bytes in use now, and resets the peak to it.
fn heap_mark() -> usize {
    let now = HEAP_NOW.load(Ordering::Relaxed);
    HEAP_PEAK.store(now, Ordering::Relaxed);
    now
}

/// Memory of one translation: what the published table keeps, and the peak above the
/// starting point while translating.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Memory {
    table_bytes: usize,
    peak_bytes: usize,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn translate_bench(n: usize, runs: usize) -> (Stat, Stat, Memory) {
    let text = manifests(n);
    let mut translate_ms = Vec::new();
    let mut parse_ms = Vec::new();
    let mut mem = Memory::default();
    for _ in 0..runs {
        let t = Instant::now();
        let mut snap = Snapshot::default();
        let mut diags = Vec::new();
        load_text("bench.yaml", &text, &mut snap, &mut diags);
        parse_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(diags.is_empty(), "{:?}", diags.first());
        let store = RouteStore::default();
        let before = heap_mark();
        let t = Instant::now();
        let tr = translate(&snap, &ClassFilter::default());
        store.publish(tr.routes);
        translate_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let peak = HEAP_PEAK.load(Ordering::Relaxed);
        let accepted = tr.accepted.len();
        drop((tr.diagnostics, tr.accepted, tr.rejected));
        mem = Memory {
            table_bytes: HEAP_NOW.load(Ordering::Relaxed).saturating_sub(before),
            peak_bytes: peak.saturating_sub(before),
        };
        assert_eq!(accepted, n);
        assert!(
            store
                .load()
                .lookup(&format!("h{}.bench.example", n - 1), "/api/x")
                .is_some()
        );
    }
    (stat(parse_ms), stat(translate_ms), mem)
}

fn nginx_bench(n: usize, runs: usize) -> Option<Stat> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let dir = TempDir::new(&format!("bench-nginx-{n}"));
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(n, &dir.0)).ok()?;
    let mut ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(nginx)
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir.0)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("nginx -t failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Some(stat(ms))
}

/// A minimal HTTP/1.1 GET over a new connection: the status code.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn ingress_yaml(name: &str, path: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  ingressClassName: ebpf-lb\n  rules:\n  - http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]}}\n"
    )
}

fn main() {
    let args = Args::parse();
    let mut report = serde_json::Map::new();
    println!(
        "== control plane: translate + publish (50k endpoints, {} runs) ==",
        args.runs
    );
    println!(
        "{:>9} {:>14} {:>22} {:>16} {:>22} {:>8}",
        "ingresses",
        "parse ms",
        "translate+publish ms",
        "table / peak MiB",
        "nginx -t ms (peer)",
        "ratio"
    );
    for n in [1_000usize, 10_000] {
        let (parse, tr, mem) = translate_bench(n, args.runs);
        let peer = nginx_bench(n, args.runs);
        let ratio = peer.map(|p| p.median / tr.median);
        println!(
            "{n:>9} {:>14} {:>22} {:>16} {:>22} {:>8}",
            format!("{:.1} [{:.1}-{:.1}]", parse.median, parse.min, parse.max),
            format!("{:.1} [{:.1}-{:.1}]", tr.median, tr.min, tr.max),
            format!(
                "{:.1} / {:.1}",
                mem.table_bytes as f64 / 1048576.0,
                mem.peak_bytes as f64 / 1048576.0
            ),
            peer.map_or("(nginx not installed)".to_owned(), |p| format!(
                "{:.0} [{:.0}-{:.0}]",
                p.median, p.min, p.max
            )),
            ratio.map_or("-".to_owned(), |r| format!("{r:.1}x")),
        );
        report.insert(
            format!("translate_{n}"),
            serde_json::json!({"parse_ms": parse, "translate_publish_ms": tr, "memory": mem, "nginx_t_ms": peer, "nginx_over_ours": ratio}),
        );
    }

    println!("\n== manifest change -> new route serving ==");
    let (_backend, bport) = start_backend(&args.backend, "bench");
    let dir = TempDir::new("bench-control");
    dir.write("base.yaml", &ingress_yaml("base", "/base", bport));
    let lb = LocalLb::start(&args.ebpf_lb, &dir.0);
    let mut change_ms = Vec::new();
    for i in 0..args.runs.max(5) {
        let path = format!("/new{i}");
        let t = Instant::now();
        dir.write(
            &format!("new{i}.yaml"),
            &ingress_yaml(&format!("new{i}"), &path, bport),
        );
        while get_status(lb.http_port, &path) != Some(200) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "route {path} never served"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        change_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let change = stat(change_ms);
    println!(
        "median {:.0} ms [min {:.0}, max {:.0}] (poll 200 ms + debounce 100 ms by design)",
        change.median, change.min, change.max
    );
    report.insert(
        "file_change_to_traffic_ms".into(),
        serde_json::json!(change),
    );

    println!("\n== requests while the configuration changes every 50 ms for 5 s ==");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let port = lb.http_port;
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: stops on the flag, after 60 s, or after 200k requests.
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && ok.load(Ordering::Relaxed) < 200_000
            {
                if get_status(port, "/base") == Some(200) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t = Instant::now();
    let mut changes = 0;
    while t.elapsed() < Duration::from_secs(5) {
        dir.write(
            "churn.yaml",
            &ingress_yaml("churn", &format!("/churn{changes}"), bport),
        );
        changes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{changes} changes, {ok} requests ok, {failed} failed");
    report.insert(
        "continuous_change".into(),
        serde_json::json!({"changes": changes, "ok": ok, "failed": failed}),
    );

    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let json = serde_json::Value::Object(report);
    match std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", args.out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", args.out.display()),
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
