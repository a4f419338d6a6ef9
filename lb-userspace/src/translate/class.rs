//! Which Ingresses are ours: `spec.ingressClassName` (or the legacy
//! `kubernetes.io/ingress.class` annotation) naming our class, an IngressClass whose
//! controller is ours, or no class at all when our IngressClass is the cluster default or
//! `--watch-ingress-without-class` is set.
use k8s_openapi::api::networking::v1::Ingress;

use crate::provider::Snapshot;

/// `spec.controller` of IngressClasses this controller serves.
pub const CONTROLLER_NAME: &str = "ebpf-lb.io/ingress-controller";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

#[derive(Clone, Debug)]
pub struct ClassFilter {
    /// `--ingress-class`.
    pub class: String,
    /// `--watch-ingress-without-class`.
    pub without_class: bool,
    /// `--namespace`: where ConfigMap `ebpf-lb` (global L7 settings such as
    /// `limit-req-status-code`) is read from.
    pub namespace: String,
}

impl Default for ClassFilter {
    fn default() -> Self {
        Self {
            class: "ebpf-lb".into(),
            without_class: false,
            namespace: "ebpf-lb".into(),
        }
    }
}

impl ClassFilter {
    pub fn matches(&self, ingress: &Ingress, snapshot: &Snapshot) -> bool {
        let named = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        match named {
            Some(name) => name == self.class || self.class_is_ours(name, snapshot),
            None => self.without_class || self.default_class_is_ours(snapshot),
        }
    }

    fn class_is_ours(&self, name: &str, snapshot: &Snapshot) -> bool {
        snapshot.ingress_classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER_NAME)
        })
    }

    fn default_class_is_ours(&self, snapshot: &Snapshot) -> bool {
        snapshot.ingress_classes.iter().any(|c| {
            let is_default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            is_default
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER_NAME)
        })
    }
}
