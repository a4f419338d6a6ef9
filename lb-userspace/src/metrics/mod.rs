//! Prometheus metrics on `--admin-listen /metrics`, in the Prometheus text format 0.0.4.
//!
//! The `nginx_ingress_controller_*` families keep ingress-nginx's exact names and labels so
//! existing dashboards keep working (its request counter has no `_total` suffix, so it is
//! exposed untyped, as a Go counter without suffix scrapes). `ebpf_lb_*` families cover what
//! nginx never had. Label cardinality is bounded: `path` is the Ingress path, not the
//! request path.
pub mod observe;
mod series;
pub mod upstream;
pub mod xdp;

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use rustls::sign::CertifiedKey;
use tracing::warn;

use crate::{
    tls::{
        ServedCert,
        x509::{self, CertSummary},
    },
    translate::CONTROLLER_NAME,
};

/// Labels of ingress-nginx's per-request families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub status: String,
    pub method: String,
    pub path: String,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub canary: String,
    pub host: String,
}

/// Labels of the upstream-time family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub method: String,
    pub path: String,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub canary: String,
    pub host: String,
    pub status: String,
}

/// Labels of `nginx_ingress_controller_ssl_certificate_info` (ingress-nginx's: `namespace`
/// is the Secret's, `class` the controller).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertInfoLabels {
    pub class: String,
    pub host: String,
    pub identifier: String,
    pub issuer_common_name: String,
    pub issuer_organization: String,
    pub namespace: String,
    pub public_key_algorithm: String,
    pub secret_name: String,
    pub serial_number: String,
}

/// Labels of `nginx_ingress_controller_ssl_expire_time_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertExpiryLabels {
    pub class: String,
    pub host: String,
    pub namespace: String,
    pub secret_name: String,
}

/// A Service, for the upstream health families (endpoints are not a label: bounded
/// cardinality).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub controller: String,
}

/// A counter exposed without the `_total` suffix (ingress-nginx's names).
#[derive(Clone, Debug, Default)]
pub struct NginxCounter(pub Counter<u64, AtomicU64>);

impl TypedMetric for NginxCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for NginxCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.get(), None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // ingress-nginx's default buckets for durations.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn size_histogram() -> Histogram {
    Histogram::new([
        10.0,
        100.0,
        1_000.0,
        10_000.0,
        100_000.0,
        1_000_000.0,
        10_000_000.0,
    ])
}

/// Ejections counted where they happen (`balance`), which holds no `Metrics` handle: one
/// process-wide family, registered in every [`Metrics`].
static UPSTREAM_EJECTIONS: LazyLock<Family<ServiceLabels, Counter>> =
    LazyLock::new(Family::default);
/// Maglev tables written (`dataplane::steering`, a thread of its own); process-wide too.
static MAGLEV_REBUILDS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// TLS connections relayed for `ssl-passthrough` hosts (`proxy::passthrough`, which holds
/// no `Metrics` handle): process-wide, registered in every [`Metrics`].
static PASSTHROUGH_CONNECTIONS: LazyLock<Family<PassthroughLabels, Counter>> =
    LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassthroughLabels {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    /// `relayed`, `no_endpoint` (none ready) or `connect_failed` (every try failed).
    pub outcome: &'static str,
}

/// Counts one `ssl-passthrough` connection of an Ingress and how it went.
pub fn count_passthrough(
    ingress: &crate::routes::IngressRef,
    service: &str,
    outcome: &'static str,
) {
    PASSTHROUGH_CONNECTIONS
        .get_or_create(&PassthroughLabels {
            namespace: ingress.namespace.clone(),
            ingress: ingress.name.clone(),
            service: service.to_owned(),
            outcome,
        })
        .inc();
}

/// Request copies for `mirror-target` (`policy::mirror`, no `Metrics` handle either).
static MIRROR_REQUESTS: LazyLock<Family<MirrorLabels, Counter>> = LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub namespace: String,
    pub ingress: String,
    /// `sent` (the mirror answered), `failed`, `timeout`, `dropped` (too many in flight),
    /// `body_not_copied` (the body was too large, or did not reach its end), `invalid_url`,
    /// `invalid_request`.
    pub outcome: &'static str,
}

/// Counts one mirrored request of an Ingress and how it went.
pub fn count_mirror(ingress: &crate::routes::IngressRef, outcome: &'static str) {
    MIRROR_REQUESTS
        .get_or_create(&MirrorLabels {
            namespace: ingress.namespace.clone(),
            ingress: ingress.name.clone(),
            outcome,
        })
        .inc();
}

/// Counts one passive ejection of an endpoint of Service `namespace/service`.
pub fn count_ejection(namespace: &str, service: &str) {
    UPSTREAM_EJECTIONS
        .get_or_create(&ServiceLabels {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        })
        .inc();
}

/// Counts one Maglev table written into `MAGLEV`.
pub fn count_maglev_rebuild() {
    MAGLEV_REBUILDS.inc();
}

/// Maglev tables this process wrote so far.
pub fn maglev_rebuilds() -> u64 {
    MAGLEV_REBUILDS.get()
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, NginxCounter>,
    pub request_duration: HistogramFamily<RequestLabels>,
    pub connect_duration: HistogramFamily<RequestLabels>,
    pub response_duration: HistogramFamily<UpstreamLabels>,
    pub request_size: HistogramFamily<RequestLabels>,
    pub response_size: HistogramFamily<RequestLabels>,
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_successful_timestamp: Gauge,
    pub publish_duration: Histogram,
    pub rejected_objects: Gauge,
    pub route_tables_published: Counter,
    pub active_requests: Gauge,
    pub access_log_dropped: Counter,
    pub ssl_certificate_info: Family<CertInfoLabels, Gauge>,
    pub ssl_expire_time: Family<CertExpiryLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, NginxCounter>::default();
        registry.register(
            "nginx_ingress_controller_requests",
            "The total number of client requests",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "nginx_ingress_controller_request_duration_seconds",
            "The request processing time in seconds (first byte read to last byte sent)",
            request_duration.clone(),
        );
        let connect_duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "nginx_ingress_controller_connect_duration_seconds",
            "The time spent on establishing a connection with the upstream server (TCP, and \
             TLS when the backend protocol uses it); observed for new connections only",
            connect_duration.clone(),
        );
        let response_duration: HistogramFamily<UpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "nginx_ingress_controller_response_duration_seconds",
            "The time spent on receiving the response headers from the upstream server",
            response_duration.clone(),
        );
        let request_size: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(size_histogram);
        registry.register(
            "nginx_ingress_controller_request_size",
            "The request length (including request line, header, and request body)",
            request_size.clone(),
        );
        let response_size: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(size_histogram);
        registry.register(
            "nginx_ingress_controller_response_size",
            "The response length (body bytes sent to the client)",
            response_size.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        registry.register(
            "nginx_ingress_controller_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful",
            config_last_reload_successful.clone(),
        );
        let config_last_reload_successful_timestamp = Gauge::default();
        registry.register(
            "nginx_ingress_controller_config_last_reload_successful_timestamp_seconds",
            "Timestamp of the last successful configuration reload",
            config_last_reload_successful_timestamp.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                controller: "ebpf-lb".to_owned(),
            })
            .set(1);
        registry.register(
            "nginx_ingress_controller_build_info",
            "Build information",
            build_info,
        );
        let publish_duration = Histogram::new([0.0001, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]);
        registry.register(
            "ebpf_lb_route_table_publish_duration_seconds",
            "Time to translate the objects and publish a new route table",
            publish_duration.clone(),
        );
        let rejected_objects = Gauge::default();
        registry.register(
            "ebpf_lb_rejected_objects",
            "Ingresses rejected by the last translation",
            rejected_objects.clone(),
        );
        let route_tables_published = Counter::default();
        registry.register(
            "ebpf_lb_route_tables_published",
            "Route tables published (every configuration change)",
            route_tables_published.clone(),
        );
        let active_requests = Gauge::default();
        registry.register(
            "ebpf_lb_active_requests",
            "Requests being proxied now (streams included)",
            active_requests.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "ebpf_lb_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let ssl_certificate_info = Family::<CertInfoLabels, Gauge>::default();
        registry.register(
            "nginx_ingress_controller_ssl_certificate_info",
            "Hold all labels associated to a certificate",
            ssl_certificate_info.clone(),
        );
        let ssl_expire_time = Family::<CertExpiryLabels, Gauge>::default();
        registry.register(
            "nginx_ingress_controller_ssl_expire_time_seconds",
            "Number of seconds since 1970 to the SSL Certificate expire. An example to check \
             if this certificate will expire in 10 days is: \
             \"nginx_ingress_controller_ssl_expire_time_seconds < (time() + (10 * 24 * 3600))\"",
            ssl_expire_time.clone(),
        );
        registry.register(
            "ebpf_lb_upstream_ejections",
            "Endpoints ejected by passive outlier detection (refused connections, or 5 \
             failures in a row), by Service",
            UPSTREAM_EJECTIONS.clone(),
        );
        registry.register(
            "ebpf_lb_ssl_passthrough_connections",
            "TLS connections for ssl-passthrough hosts, relayed to the backend unterminated \
             (or refused: no_endpoint, connect_failed), by Ingress and Service",
            PASSTHROUGH_CONNECTIONS.clone(),
        );
        registry.register(
            "ebpf_lb_mirror_requests",
            "Copies of requests sent to mirror-target (answers discarded), by Ingress and \
             outcome (sent, failed, timeout, dropped, body_not_copied, invalid_url, \
             invalid_request)",
            MIRROR_REQUESTS.clone(),
        );
        registry.register(
            "ebpf_lb_maglev_rebuilds",
            "Maglev tables written into MAGLEV (node set or node health changed)",
            MAGLEV_REBUILDS.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            connect_duration,
            response_duration,
            request_size,
            response_size,
            config_last_reload_successful,
            config_last_reload_successful_timestamp,
            publish_duration,
            rejected_objects,
            route_tables_published,
            active_requests,
            access_log_dropped,
            ssl_certificate_info,
            ssl_expire_time,
        }
    }

    /// Sets the certificate families to the certificates a route table serves (its
    /// `CertTable`, and the `--default-ssl-certificate` as host `_`, ingress-nginx's
    /// catch-all server), replacing what an earlier table served. Called on every publish.
    pub fn set_certificates<'a>(&self, served: impl IntoIterator<Item = &'a ServedCert>) {
        self.ssl_certificate_info.clear();
        self.ssl_expire_time.clear();
        // One parse per certificate, however many hosts share it.
        let mut parsed: HashMap<*const CertifiedKey, Option<CertSummary>> = HashMap::new();
        for served in served {
            let summary = parsed.entry(Arc::as_ptr(&served.key)).or_insert_with(|| {
                let leaf = served.key.cert.first()?;
                match x509::summarize(leaf.as_ref()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        warn!(
                            secret = %format!("{}/{}", served.namespace, served.secret_name),
                            "certificate metrics: cannot read the certificate: {e}"
                        );
                        None
                    }
                }
            });
            let Some(summary) = summary else { continue };
            let class = CONTROLLER_NAME.to_owned();
            self.ssl_certificate_info
                .get_or_create(&CertInfoLabels {
                    class: class.clone(),
                    host: served.host.clone(),
                    identifier: summary.identifier(),
                    issuer_common_name: summary.issuer_common_name.clone(),
                    issuer_organization: summary.issuer_organization.clone(),
                    namespace: served.namespace.clone(),
                    public_key_algorithm: summary.public_key_algorithm.to_owned(),
                    secret_name: served.secret_name.clone(),
                    serial_number: summary.serial.clone(),
                })
                .set(1);
            self.ssl_expire_time
                .get_or_create(&CertExpiryLabels {
                    class,
                    host: served.host.clone(),
                    namespace: served.namespace.clone(),
                    secret_name: served.secret_name.clone(),
                })
                .set(summary.not_after);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt as _;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, date_time_ymd};

    use super::*;
    use crate::{
        balance::{Backend, Outcome},
        metrics::observe::{AccessLogTarget, Observer, RequestRecord, RouteInfo},
        routes::RouteTable,
        translate::{ClassFilter, translate},
    };

    /// The sample line of `name` whose labels contain every one of `labels`.
    fn line<'a>(text: &'a str, name: &str, labels: &[&str]) -> Option<&'a str> {
        text.lines().find(|l| {
            l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want))
        })
    }

    fn value(line: &str) -> f64 {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn record(observer: &Arc<Observer>, connect: Option<Duration>) {
        let rec = RequestRecord {
            host: "h.example".into(),
            method: http::Method::GET,
            route: Some(Arc::new(RouteInfo {
                path: "/p".into(),
                namespace: "ml".into(),
                ingress: "ing".into(),
                service: "svc".into(),
                canary: false,
                no_access_log: false,
            })),
            upstream_duration: Some(Duration::from_millis(2)),
            upstream_connect: connect,
            ..RequestRecord::default()
        };
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed();
        // Dropping the wrapped response records the request.
        drop(observer.wrap(rec, Instant::now(), http::Response::new(body)));
    }

    #[test]
    fn connect_duration_has_the_request_labels_and_only_new_connections() {
        let metrics = Arc::new(Metrics::new());
        let (observer, _) =
            Observer::new(metrics.clone(), &AccessLogTarget::Off).expect("observer");
        record(&observer, Some(Duration::from_millis(3)));
        record(&observer, None);
        record(&observer, None);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE nginx_ingress_controller_connect_duration_seconds histogram"),
            "{text}"
        );
        let labels = [
            "status=\"200\"",
            "method=\"GET\"",
            "path=\"/p\"",
            "namespace=\"ml\"",
            "ingress=\"ing\"",
            "service=\"svc\"",
            "canary=\"\"",
            "host=\"h.example\"",
        ];
        let count = line(
            &text,
            "nginx_ingress_controller_connect_duration_seconds_count",
            &labels,
        )
        .unwrap_or_else(|| panic!("connect series:\n{text}"));
        assert_eq!(
            value(count),
            1.0,
            "pooled requests are not observed: {count}"
        );
        let requests = line(&text, "nginx_ingress_controller_requests", &labels).expect("requests");
        assert_eq!(value(requests), 3.0);
        let sum = line(
            &text,
            "nginx_ingress_controller_connect_duration_seconds_sum",
            &labels,
        )
        .expect("sum");
        assert!((value(sum) - 0.003).abs() < 1e-9, "{sum}");
    }

    fn cert(cn: &str, org: &str, serial: u64, year: i32) -> Arc<CertifiedKey> {
        let mut p = CertificateParams::new(vec!["a.example.com".into()]).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, org);
        p.distinguished_name = dn;
        p.serial_number = Some(serial.into());
        p.not_after = date_time_ymd(year, 1, 1);
        let key = KeyPair::generate().expect("key");
        let pem = p.self_signed(&key).expect("cert").pem();
        Arc::new(
            crate::tls::certified_key_from_pem(pem.as_bytes(), key.serialize_pem().as_bytes())
                .expect("certified key"),
        )
    }

    #[test]
    fn certificate_families_follow_the_served_table() {
        let metrics = Metrics::new();
        let mut table = crate::tls::CertTable::default();
        let a = cert("Test CA", "Test Org", 4242, 2031);
        assert!(table.insert_from_secret("a.example.com", a.clone(), "ml", "a-tls"));
        assert!(table.insert_from_secret("*.models.example.com", a, "ml", "a-tls"));
        metrics.set_certificates(table.served());
        let text = metrics.encode();
        let info = line(
            &text,
            "nginx_ingress_controller_ssl_certificate_info",
            &["host=\"a.example.com\""],
        )
        .unwrap_or_else(|| panic!("info:\n{text}"));
        assert_eq!(
            info,
            "nginx_ingress_controller_ssl_certificate_info{class=\"ebpf-lb.io/ingress-controller\",\
             host=\"a.example.com\",identifier=\"-4242\",issuer_common_name=\"Test CA\",\
             issuer_organization=\"Test Org\",namespace=\"ml\",public_key_algorithm=\"ECDSA\",\
             secret_name=\"a-tls\",serial_number=\"4242\"} 1"
        );
        let expiry = line(
            &text,
            "nginx_ingress_controller_ssl_expire_time_seconds",
            &["host=\"*.models.example.com\""],
        )
        .unwrap_or_else(|| panic!("expiry:\n{text}"));
        // date -u -d 2031-01-01 +%s
        assert_eq!(
            expiry,
            "nginx_ingress_controller_ssl_expire_time_seconds{class=\"ebpf-lb.io/ingress-controller\",\
             host=\"*.models.example.com\",namespace=\"ml\",secret_name=\"a-tls\"} 1924992000"
        );

        // A new table replaces the old series.
        let mut next = crate::tls::CertTable::default();
        assert!(next.insert_from_secret("b.example.com", cert("B", "", 7, 2030), "web", "b"));
        metrics.set_certificates(next.served());
        let text = metrics.encode();
        assert!(!text.contains("a.example.com"), "{text}");
        assert!(
            line(
                &text,
                "nginx_ingress_controller_ssl_certificate_info",
                &["host=\"b.example.com\"", "issuer_organization=\"\""]
            )
            .is_some(),
            "{text}"
        );
    }

    fn eps(n: u8) -> Vec<std::net::SocketAddr> {
        (1..=n)
            .map(|i| std::net::SocketAddr::from(([198, 18, 9, i], 80)))
            .collect()
    }

    #[test]
    fn ejections_are_counted_by_service() {
        let metrics = Metrics::new();
        let b = Backend::new("ejection-test", "svc", "80", eps(2));
        b.report(0, Outcome::ConnectFailure, Duration::from_millis(1));
        // Already ejected: not counted again; the last endpoint is never ejected.
        b.report(0, Outcome::ConnectFailure, Duration::from_millis(1));
        b.report(1, Outcome::ConnectFailure, Duration::from_millis(1));
        let text = metrics.encode();
        let series = line(
            &text,
            "ebpf_lb_upstream_ejections_total",
            &["namespace=\"ejection-test\"", "service=\"svc\""],
        )
        .unwrap_or_else(|| panic!("ejections:\n{text}"));
        assert_eq!(value(series), 1.0, "{series}");
        assert!(
            text.contains("# TYPE ebpf_lb_upstream_ejections_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ebpf_lb_maglev_rebuilds_total counter"),
            "{text}"
        );
    }

    const ROUTES: &str = r#"
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
endpoints: [{addresses: ["198.18.1.2", "198.18.1.3", "198.18.1.4"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, namespace: ml, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  ingressClassName: ebpf-lb
  rules:
  - host: a.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}
  - host: b.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: model, port: {number: 80}}}}]}
"#;

    fn table() -> RouteTable {
        let snap = crate::provider::files::fixture(ROUTES);
        translate(&snap, &ClassFilter::default()).routes
    }

    #[test]
    fn endpoint_health_by_service() {
        let table = table();
        let now = crate::balance::health::now_ms();
        let svc = ("ml".to_owned(), "model".to_owned());
        assert_eq!(upstream::endpoint_health(&table, now)[&svc], (3, 0));
        let route = table.lookup("a.example", "/").expect("route");
        route
            .backend
            .report(1, Outcome::ConnectFailure, Duration::from_millis(1));
        let now = crate::balance::health::now_ms();
        assert_eq!(upstream::endpoint_health(&table, now)[&svc], (2, 1));

        let mut metrics = Metrics::new();
        let store = Arc::new(crate::routes::RouteStore::default());
        store.publish(table);
        metrics
            .registry
            .register_collector(Box::new(upstream::UpstreamCollector { routes: store }));
        let text = metrics.encode();
        for (state, n) in [("healthy", 2.0), ("ejected", 1.0)] {
            let series = line(
                &text,
                "ebpf_lb_upstream_endpoints",
                &[
                    "namespace=\"ml\"",
                    "service=\"model\"",
                    &format!("state=\"{state}\""),
                ],
            )
            .unwrap_or_else(|| panic!("{state}:\n{text}"));
            assert_eq!(value(series), n, "{series}");
        }
    }
}
