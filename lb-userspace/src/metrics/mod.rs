//! Prometheus metrics on `--admin-listen /metrics`, in the Prometheus text format 0.0.4.
//!
//! The `nginx_ingress_controller_*` families keep ingress-nginx's exact names and labels so
//! existing dashboards keep working (its request counter has no `_total` suffix, so it is
//! exposed untyped, as a Go counter without suffix scrapes). `ebpf_lb_*` families cover what
//! nginx never had. Label cardinality is bounded: `path` is the Ingress path, not the
//! request path.
pub mod observe;
pub mod xdp;

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
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

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, NginxCounter>,
    pub request_duration: HistogramFamily<RequestLabels>,
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
        Self {
            registry,
            requests,
            request_duration,
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
