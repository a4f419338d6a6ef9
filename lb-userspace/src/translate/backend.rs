//! Resolving an Ingress backend (Service + port) to endpoint addresses through the Service's
//! EndpointSlices (`kubernetes.io/service-name` label, matching port name, ready endpoints).
use std::{
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort},
    discovery::v1::EndpointSlice,
    networking::v1::IngressBackend,
};

use crate::{balance::Backend, diagnostics::Diagnostic, provider::Snapshot};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// One Backend per (namespace, service, port) so routes share balancing state.
    cache: RefCell<HashMap<(String, String, String), Arc<Backend>>>,
}

fn ns(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

impl<'a> Resolver<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
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
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The backend for `backend` in `namespace`, or a diagnostic on `object`/`field`.
    pub fn resolve(
        &self,
        namespace: &str,
        backend: &IngressBackend,
        object: &str,
        field: &str,
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
        );
        if let Some(b) = self.cache.borrow().get(&key).cloned() {
            return Ok(b);
        }

        let Some(service) = self.services.get(&(namespace, svc_ref.name.as_str())) else {
            return Err(Diagnostic::error(
                object,
                format!("{field}.service.name"),
                format!("Service {namespace}/{} not found", svc_ref.name),
            ));
        };
        let spec = service.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(Diagnostic::error(
                object,
                format!("{field}.service.name"),
                format!(
                    "Service {namespace}/{} is of type ExternalName, which is not supported yet",
                    svc_ref.name
                ),
            ));
        }
        let ports = spec.ports.unwrap_or_default();
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
        let endpoints = self.endpoints(namespace, &svc_ref.name, service_port);
        let b = Arc::new(Backend::new(
            namespace,
            &svc_ref.name,
            &port_label,
            endpoints,
        ));
        self.cache.borrow_mut().insert(key, b.clone());
        Ok(b)
    }

    /// Ready endpoints of a Service port: slice ports are matched by the Service port's name
    /// (unnamed matches unnamed). Endpoints whose `ready` condition is false are left out.
    fn endpoints(&self, namespace: &str, service: &str, port: &ServicePort) -> Vec<SocketAddr> {
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
