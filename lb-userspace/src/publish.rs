//! From a provider update to what serves traffic: translate (pure), log the diagnostics,
//! swap the route table atomically. Requests in flight finish on the table they started with.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    balance::StateRegistry,
    diagnostics::Severity,
    metrics::Metrics,
    provider::Update,
    routes::RouteStore,
    tls::ServedCert,
    translate::{ClassFilter, Translation, tls::load_secret, translate_with},
};

/// Called with every update before its route table is published.
type UpdateHook = Box<dyn Fn(&Update) + Send + Sync>;

pub struct Publisher {
    pub routes: Arc<RouteStore>,
    pub classes: ClassFilter,
    /// Number of route tables published so far.
    pub generation: AtomicUsize,
    /// Endpoint balancing state (EWMA, ejections) carried from one table to the next.
    pub balance_state: StateRegistry,
    metrics: Option<Arc<Metrics>>,
    /// Called with every update before its route table is published (kernel policy sync).
    on_update: std::sync::OnceLock<UpdateHook>,
    /// `--default-ssl-certificate` as (namespace, name).
    default_certificate: Option<(String, String)>,
}

impl Publisher {
    pub fn new(routes: Arc<RouteStore>, classes: ClassFilter) -> Self {
        Self {
            routes,
            classes,
            generation: AtomicUsize::new(0),
            balance_state: StateRegistry::default(),
            metrics: None,
            on_update: std::sync::OnceLock::new(),
            default_certificate: None,
        }
    }

    /// Serves the certificate of Secret (namespace, name) (`--default-ssl-certificate`) to
    /// names no Ingress has one for, as of each published snapshot.
    pub fn with_default_certificate(mut self, secret: Option<(String, String)>) -> Self {
        self.default_certificate = secret;
        self
    }

    /// From now on, calls `hook` with every update (e.g. to write ConfigMap policy into
    /// the BPF maps once XDP is attached). Set once; a second hook is refused (`false`).
    pub fn set_update_hook(&self, hook: impl Fn(&Update) + Send + Sync + 'static) -> bool {
        self.on_update.set(Box::new(hook)).is_ok()
    }

    /// Records publishes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Translates `update` and publishes the result; returns the translation's summary.
    pub fn apply(&self, update: &Update) -> Translation {
        let started = Instant::now();
        if let Some(hook) = self.on_update.get() {
            hook(update);
        }
        let mut translation = translate_with(&update.snapshot, &self.classes, &self.balance_state);
        for d in update.diagnostics.iter().chain(&translation.diagnostics) {
            match d.severity {
                Severity::Error => error!(object = %d.object, field = %d.field, "{}", d.message),
                Severity::Warning => warn!(object = %d.object, field = %d.field, "{}", d.message),
            }
        }
        let mut routes = std::mem::take(&mut translation.routes);
        let mut default_served = None;
        if let Some((ns, name)) = &self.default_certificate {
            match load_secret(&update.snapshot, ns, name) {
                Ok(key) => {
                    let key = Arc::new(key);
                    routes.default_certificate = Some(key.clone());
                    default_served = Some(ServedCert {
                        host: "_".to_owned(),
                        namespace: ns.clone(),
                        secret_name: name.clone(),
                        key,
                    });
                }
                Err(e) => warn!(
                    secret = %format!("{ns}/{name}"),
                    error = %e,
                    "--default-ssl-certificate unusable; serving the self-signed certificate"
                ),
            }
        }
        if let Some(m) = &self.metrics {
            m.set_certificates(routes.tls.served().iter().chain(&default_served));
        }
        self.routes.publish(routes);
        // Endpoints only the previous table held are forgotten once it is gone; those still
        // referenced by requests in flight on it are pruned at a later publish.
        self.balance_state.prune();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(m) = &self.metrics {
            m.publish_duration.observe(started.elapsed().as_secs_f64());
            m.route_tables_published.inc();
            m.rejected_objects.set(translation.rejected.len() as i64);
            // A route table is always published (bad objects are left out, never fatal),
            // so the reload is successful even when some objects were rejected.
            m.config_last_reload_successful.set(1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            m.config_last_reload_successful_timestamp.set(now);
        }
        info!(
            generation,
            ingresses = translation.accepted.len(),
            rejected = translation.rejected.len(),
            micros = started.elapsed().as_micros() as u64,
            "route table published"
        );
        translation
    }

    /// Publishes every update the provider sends, until shutdown.
    pub async fn run(
        self: Arc<Self>,
        mut updates: watch::Receiver<Arc<Update>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = updates.changed() => if r.is_err() { return },
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
            let update = updates.borrow_and_update().clone();
            self.apply(&update);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::Outcome;

    const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: model, namespace: ml}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: model-1, namespace: ml, labels: {kubernetes.io/service-name: model}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["198.18.1.2"]}, {addresses: ["198.18.1.3"]}, {addresses: ["198.18.1.4"]}]
"#;

    fn ingress(name: &str, host: &str) -> String {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata: {{name: {name}, namespace: ml}}\n\
             spec:\n  ingressClassName: ebpf-lb\n  rules: [{{host: {host}, http: {{paths: \
             [{{path: /, pathType: Prefix, backend: {{service: {{name: model, port: {{name: \
             http}}}}}}}}]}}}}]\n"
        )
    }

    fn update(yaml: &str) -> Update {
        Update {
            snapshot: crate::provider::files::fixture(yaml),
            ..Update::default()
        }
    }

    #[test]
    fn the_default_certificate_is_in_the_certificate_metrics_as_the_catch_all_host() {
        let routes = Arc::new(RouteStore::default());
        let metrics = Arc::new(Metrics::new());
        let publisher = Publisher::new(routes.clone(), ClassFilter::default())
            .with_metrics(metrics.clone())
            .with_default_certificate(Some(("ingress".into(), "fallback".into())));
        let secret = crate::translate::tls::secret_fixture("ingress", "fallback", "lb.test");
        let with_secret = format!("{SERVICE}{}{secret}", ingress("a", "a.test"));
        publisher.apply(&update(&with_secret));
        assert!(routes.load().default_certificate.is_some());
        let text = metrics.encode();
        for family in [
            "nginx_ingress_controller_ssl_certificate_info{",
            "nginx_ingress_controller_ssl_expire_time_seconds{",
        ] {
            let series = text
                .lines()
                .find(|l| l.starts_with(family) && l.contains("host=\"_\""))
                .unwrap_or_else(|| panic!("no {family} series for host _:\n{text}"));
            assert!(
                series.contains("namespace=\"ingress\"")
                    && series.contains("secret_name=\"fallback\""),
                "{series}"
            );
        }

        // The Secret is gone: the self-signed certificate is served, and not reported.
        publisher.apply(&update(&format!("{SERVICE}{}", ingress("a", "a.test"))));
        assert!(routes.load().default_certificate.is_none());
        assert!(!metrics.encode().contains("host=\"_\""));
    }

    #[test]
    fn ejections_and_latency_survive_a_publish_that_keeps_the_service() {
        let routes = Arc::new(RouteStore::default());
        let publisher = Publisher::new(routes.clone(), ClassFilter::default());
        let one = format!("{SERVICE}{}", ingress("a", "a.test"));
        publisher.apply(&update(&one));
        let backend = routes
            .load()
            .lookup("a.test", "/")
            .expect("route")
            .backend
            .clone();
        let dead = backend.endpoints[0];
        backend.start(0);
        backend.report(0, Outcome::ConnectFailure, Duration::from_millis(1));
        backend.start(1);
        backend.report(1, Outcome::Success, Duration::from_millis(700));
        let now = crate::balance::health::now_ms();
        assert!(backend.state[0].is_ejected(now));
        drop(backend);

        // Another Ingress is added (same Service), then the first one alone again.
        let two = format!("{one}{}", ingress("b", "b.test"));
        for yaml in [&two, &one] {
            publisher.apply(&update(yaml));
            let table = routes.load();
            let b = &table.lookup("a.test", "/").expect("route").backend;
            let i = b
                .endpoints
                .iter()
                .position(|e| *e == dead)
                .expect("endpoint");
            assert!(b.state[i].is_ejected(now), "ejection forgotten");
            assert!(
                b.state[1].ewma() >= Duration::from_millis(700),
                "EWMA forgotten"
            );
            for _ in 0..30 {
                let chosen = b.choose(crate::balance::Strategy::RoundRobin, &[]);
                assert_ne!(chosen, Some(i));
            }
        }
    }

    #[test]
    fn endpoints_that_leave_their_service_are_forgotten() {
        let routes = Arc::new(RouteStore::default());
        let publisher = Publisher::new(routes.clone(), ClassFilter::default());
        let three = format!("{SERVICE}{}", ingress("a", "a.test"));
        publisher.apply(&update(&three));
        assert_eq!(publisher.balance_state.len(), 3);
        let one = three.replace(
            r#"[{addresses: ["198.18.1.2"]}, {addresses: ["198.18.1.3"]}, "#,
            "[",
        );
        publisher.apply(&update(&one));
        assert_eq!(publisher.balance_state.len(), 1);
        publisher.apply(&update(""));
        assert!(publisher.balance_state.is_empty());
    }

    /// A keep-alive HTTP/1.1 backend on 127.0.0.1 answering every request with `name`.
    async fn named_backend(name: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                                name.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        port
    }

    /// Two route tables (backend a alone; a and b with EWMA balancing) published in turn
    /// every 10 ms, in-process, while 8 keep-alive connections send 10k requests through
    /// the proxy: none fails, both tables served requests, and the publishes really were
    /// that frequent. (The end-to-end test swaps manifests, which the directory watcher
    /// debounces; this one drives `Publisher` directly.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn route_tables_published_every_10ms_fail_no_request() {
        use http_body_util::{BodyExt as _, Empty};
        use hyper_util::rt::TokioIo;

        let (pa, pb) = (named_backend("a").await, named_backend("b").await);
        let yaml = |ports: &[u16], balance: &str| {
            let mut y = String::from(
                "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: t}\n\
                 spec: {ports: [{name: http, port: 80}]}\n",
            );
            for (i, port) in ports.iter().enumerate() {
                y.push_str(&format!(
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                     metadata: {{name: svc-{i}, namespace: t, labels: \
                     {{kubernetes.io/service-name: svc}}}}\naddressType: IPv4\n\
                     ports: [{{name: http, port: {port}}}]\n\
                     endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
                ));
            }
            y.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: swap\n  \
                 namespace: t\n  annotations: {{nginx.ingress.kubernetes.io/load-balance: {balance}}}\n\
                 spec:\n  ingressClassName: ebpf-lb\n  rules: [{{http: {{paths: [{{path: /, \
                 pathType: Prefix, backend: {{service: {{name: svc, port: {{name: http}}}}}}}}]}}}}]\n"
            ));
            update(&y)
        };
        let (one, two) = (yaml(&[pa], "round_robin"), yaml(&[pa, pb], "ewma"));
        let routes = Arc::new(RouteStore::default());
        let publisher = Arc::new(Publisher::new(routes.clone(), ClassFilter::default()));
        publisher.apply(&one);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (observer, _) = crate::metrics::observe::Observer::new(
            metrics,
            &crate::metrics::observe::AccessLogTarget::Off,
        )
        .expect("observer");
        let proxy = Arc::new(crate::proxy::Proxy::new(routes.clone(), observer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(crate::proxy::listen::serve(proxy, listener, None, stop_rx));

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (done, publisher) = (done.clone(), publisher.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                // Bounded: at most 6000 publishes (60 s).
                while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 6000 {
                    publisher.apply(if n.is_multiple_of(2) { &two } else { &one });
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                n
            })
        };
        let started = Instant::now();
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
                let (mut bad, mut served_b) = (Vec::new(), 0u32);
                for i in 0..1250 {
                    let req = http::Request::get("/swap")
                        .header("host", "swap.test")
                        .body(Empty::<bytes::Bytes>::new())
                        .expect("request");
                    match send.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                                Ok(body) if status == 200 => {
                                    served_b += u32::from(&body[..] == b"b")
                                }
                                other => bad.push(format!("request {i}: {status} {other:?}")),
                            }
                        }
                        Err(e) => {
                            bad.push(format!("request {i}: {e}"));
                            break;
                        }
                    }
                }
                (bad, served_b)
            }));
        }
        let (mut failures, mut served_b) = (Vec::new(), 0);
        for t in tasks {
            let (bad, b) = t.await.expect("client task");
            failures.extend(bad);
            served_b += b;
        }
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let publishes = swapper.join().expect("swapper");
        let _ = stop_tx.send(true);
        let _ = server.await;
        assert!(
            failures.is_empty(),
            "{} of 10000 failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        // At least one publish per 20 ms of the run (sleeps overshoot under load).
        let per_20ms = (elapsed.as_millis() / 20) as u32;
        assert!(
            publishes >= per_20ms.max(2),
            "{publishes} publishes in {elapsed:?}"
        );
        assert!(served_b > 0, "the table with backend b never served");
    }
}
