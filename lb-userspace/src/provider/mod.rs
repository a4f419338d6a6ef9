//! Providers turn a source of Kubernetes objects into a [`Snapshot`]: the `files` provider
//! reads a directory of manifests (the embedded default, also used by the demo and the tests);
//! the `kube` provider watches the API server.
pub mod files;
pub mod kube;
pub mod watch;

use crate::diagnostics::Diagnostic;

use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

/// Every object translation looks at, as typed Kubernetes objects.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
}

impl Snapshot {
    /// Adds every object of `other`.
    pub fn extend(&mut self, other: Snapshot) {
        self.ingresses.extend(other.ingresses);
        self.ingress_classes.extend(other.ingress_classes);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.secrets.extend(other.secrets);
        self.config_maps.extend(other.config_maps);
    }
}

/// What a provider publishes: the objects, and the problems found reading them.
#[derive(Clone, Debug, Default)]
pub struct Update {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    /// The proxy nodes, when the provider knows them (kube: the DaemonSet's Ready pods'
    /// host IPs, sorted); `None` leaves the node set to `--peer`.
    pub nodes: Option<Vec<std::net::IpAddr>>,
}

/// `namespace/name` of an object (namespace `default` when unset, as the API server would).
pub fn object_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("<unnamed>")
    )
}
