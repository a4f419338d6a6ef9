//! Resolving an Ingress backend (Service + port) to endpoint addresses through the Service's
//! EndpointSlices (`kubernetes.io/service-name` label, matching port name, ready endpoints).
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort},
    discovery::v1::EndpointSlice,
    networking::v1::IngressBackend,
};

use crate::{
    balance::{Backend, StateRegistry},
    diagnostics::Diagnostic,
    provider::Snapshot,
};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// (namespace, service, port as written, service-upstream).
type BackendKey = (String, String, String, bool);

pub struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// One Backend per (namespace, service, port) so routes share balancing state.
    cache: Mutex<HashMap<BackendKey, Arc<Backend>>>,
    /// Balancing state that survives publishes.
    registry: &'a StateRegistry,
}

fn ns(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

impl<'a> Resolver<'a> {
    pub fn new(snapshot: &'a Snapshot, registry: &'a StateRegistry) -> Self {
        let services = snapshot
            .services
            .iter()
            .filter_map(|s| Some(((ns(&s.metadata), s.metadata.name.as_deref()?), s)))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            let svc = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(svc) = svc {
                slices
                    .entry((ns(&slice.metadata), svc.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Self {
            services,
            slices,
            cache: Mutex::new(HashMap::new()),
            registry,
        }
    }

    /// The backend for `backend` in `namespace`, or a diagnostic on `object`/`field`.
    pub fn resolve(
        &self,
        namespace: &str,
        backend: &IngressBackend,
        object: &str,
        field: &str,
        service_upstream: bool,
    ) -> Result<Arc<Backend>, Diagnostic> {
        let Some(svc_ref) = &backend.service else {
            return Err(Diagnostic::error(
                object,
                format!("{field}.resource"),
                "resource backends are not supported; use a Service backend",
            ));
        };
        let port_ref = svc_ref.port.as_ref();
        let port_label = match port_ref {
            Some(p) => match (&p.number, &p.name) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => String::new(),
            },
            None => String::new(),
        };
        if port_label.is_empty() {
            return Err(Diagnostic::error(
                object,
                format!("{field}.service.port"),
                "required: a port number or name",
            ));
        }
        let key = (
            namespace.to_owned(),
            svc_ref.name.clone(),
            port_label.clone(),
            service_upstream,
        );
        if let Some(b) = self.cached(&key) {
            return Ok(b);
        }

        let Some(service) = self.services.get(&(namespace, svc_ref.name.as_str())) else {
            return Err(Diagnostic::error(
                object,
                format!("{field}.service.name"),
                format!("Service {namespace}/{} not found", svc_ref.name),
            ));
        };
        let mut spec = service.spec.clone().unwrap_or_default();
        // The endpoints come from this Service, or from the in-cluster Service an
        // ExternalName points at (how Ingresses reach Services in other namespaces).
        let (mut ep_namespace, mut ep_service) = (namespace.to_owned(), svc_ref.name.clone());
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.clone().unwrap_or_default();
            let Some((t_ns, t_name, t_svc)) = self.in_cluster_target(&target) else {
                return Err(Diagnostic::error(
                    object,
                    format!("{field}.service.name"),
                    format!(
                        "Service {namespace}/{} is ExternalName {target:?}: only names of \
                         in-cluster Services (<name>.<namespace>.svc[.cluster.local]) are \
                         supported",
                        svc_ref.name
                    ),
                ));
            };
            spec = t_svc.spec.clone().unwrap_or_default();
            (ep_namespace, ep_service) = (t_ns.to_owned(), t_name.to_owned());
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(service_port) = ports.iter().find(|p| {
            port_ref.is_some_and(|r| {
                r.number.is_some_and(|n| n == p.port)
                    || (r.number.is_none() && r.name.as_deref() == p.name.as_deref())
            })
        }) else {
            return Err(Diagnostic::error(
                object,
                format!("{field}.service.port"),
                format!(
                    "Service {namespace}/{} has no port {port_label}",
                    svc_ref.name
                ),
            ));
        };
        let endpoints = if service_upstream {
            cluster_ip_endpoint(&spec, service_port)
        } else {
            self.endpoints(&ep_namespace, &ep_service, service_port)
        };
        let b = Arc::new(Backend::registered(
            namespace,
            &svc_ref.name,
            &port_label,
            endpoints,
            self.registry,
        ));
        Ok(self.cache_insert(key, b))
    }

    fn cached(&self, key: &BackendKey) -> Option<Arc<Backend>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Caches `b` under `key`, or returns the Backend another thread cached first (so
    /// every route of a Service port shares one).
    fn cache_insert(&self, key: BackendKey, b: Arc<Backend>) -> Arc<Backend> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert(b)
            .clone()
    }

    /// `<name>.<namespace>.svc[.cluster.local][.]` -> that Service, when it is in the snapshot.
    fn in_cluster_target(&self, external: &str) -> Option<(&'a str, &'a str, &'a Service)> {
        let host = external.trim_end_matches('.');
        let host = host.strip_suffix(".cluster.local").unwrap_or(host);
        let host = host.strip_suffix(".svc")?;
        let (name, ns) = host.split_once('.')?;
        let (&(ns, name), &svc) = self
            .services
            .iter()
            .find(|((s_ns, s_name), _)| *s_ns == ns && *s_name == name)?;
        (svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName"))
            .then_some((ns, name, svc))
    }

    /// The first port of Service `namespace/name` (the `default-backend` annotation).
    pub fn resolve_service_first_port(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Backend>, String> {
        let service = self
            .services
            .get(&(namespace, name))
            .ok_or_else(|| format!("Service {namespace}/{name} not found"))?;
        let spec = service.spec.clone().unwrap_or_default();
        let port = spec
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .ok_or_else(|| format!("Service {namespace}/{name} has no ports"))?;
        let endpoints = self.endpoints(namespace, name, port);
        Ok(Arc::new(Backend::registered(
            namespace,
            name,
            &port.port.to_string(),
            endpoints,
            self.registry,
        )))
    }

    /// Ready endpoints of a Service port: slice ports are matched by the Service port's name
    /// (unnamed matches unnamed). Endpoints whose `ready` condition is false are left out.
    fn endpoints(&self, namespace: &str, service: &str, port: &ServicePort) -> Vec<SocketAddr> {
        let (namespace, service) = (namespace, service);
        let mut out = Vec::new();
        let want = port.name.as_deref().unwrap_or("");
        for slice in self.slices.get(&(namespace, service)).into_iter().flatten() {
            let Some(number) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == want)
                .and_then(|p| p.port)
            else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    if let Ok(ip) = addr.parse::<IpAddr>() {
                        out.push(SocketAddr::new(ip, number));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// `service-upstream`: the ClusterIP and Service port, when the Service has a ClusterIP.
fn cluster_ip_endpoint(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    port: &ServicePort,
) -> Vec<SocketAddr> {
    let ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    match (ip, u16::try_from(port.port)) {
        (Some(ip), Ok(p)) => vec![SocketAddr::new(ip, p)],
        _ => Vec::new(),
    }
}
