//! Upstream health at scrape time: endpoints of every Service the live route table uses,
//! healthy or ejected by passive outlier detection. Labelled by Service, not by endpoint,
//! so the cardinality is that of the Services.
use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
};

use crate::{
    balance::{Backend, health},
    routes::{RouteStore, RouteTable},
};

/// Reads the live route table on every scrape.
#[derive(Debug)]
pub struct UpstreamCollector {
    pub routes: Arc<RouteStore>,
}

/// (healthy, ejected) endpoints per (namespace, service). An endpoint that several backends
/// of the same Service share (several Ingresses naming it) counts once, as ejected when any
/// of them ejected it.
pub fn endpoint_health(table: &RouteTable, now_ms: u64) -> BTreeMap<(String, String), (u64, u64)> {
    let mut seen: HashSet<*const Backend> = HashSet::new();
    let mut per: BTreeMap<(String, String), BTreeMap<SocketAddr, bool>> = BTreeMap::new();
    let mut visit = |b: &Arc<Backend>| {
        if !seen.insert(Arc::as_ptr(b)) {
            return;
        }
        let eps = per
            .entry((b.namespace.clone(), b.service.clone()))
            .or_default();
        for (addr, state) in b.endpoints.iter().zip(&b.state) {
            *eps.entry(*addr).or_default() |= state.is_ejected(now_ms);
        }
    };
    for (_, route) in table.rows() {
        visit(&route.backend);
        for c in &route.canaries {
            visit(&c.backend);
        }
        if let Some(f) = &route.fallback {
            visit(f);
        }
    }
    per.into_iter()
        .map(|(svc, eps)| {
            let ejected = eps.values().filter(|e| **e).count() as u64;
            (svc, (eps.len() as u64 - ejected, ejected))
        })
        .collect()
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.routes.load();
        let health = endpoint_health(&table, health::now_ms());
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "ebpf_lb_upstream_endpoints",
            "Ready endpoints of the Services in the route table, by state: healthy, or \
             ejected by passive outlier detection",
            None,
            gauge.metric_type(),
        )?;
        for ((namespace, service), (healthy, ejected)) in health {
            for (state, n) in [("healthy", healthy), ("ejected", ejected)] {
                let labels = [
                    ("namespace", namespace.as_str()),
                    ("service", service.as_str()),
                    ("state", state),
                ];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
