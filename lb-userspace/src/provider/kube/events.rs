//! Kubernetes Events (core/v1) for the problems translation found in Ingresses: rejected
//! objects and ignored or refused annotations, so `kubectl describe ingress` says what is wrong
//! where users look. Each problem is posted once while it lasts; if it goes away and comes
//! back, it is posted again.
use std::collections::{HashMap, HashSet};

use k8s_openapi::Resource as _;
use k8s_openapi::{
    api::{
        core::v1::{Event, EventSource, ObjectReference},
        networking::v1::Ingress,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

use super::FIELD_MANAGER;
use crate::{
    diagnostics::{Diagnostic, Severity},
    provider::object_ref,
    routes::IngressRef,
};

/// `reportingController` of our Events (the IngressClass controller name).
pub const REPORTING_CONTROLLER: &str = "ebpf-lb.io/ingress-controller";

/// Reasons, CamelCase as Kubernetes writes them.
pub const REASON_REJECTED: &str = "Rejected";
pub const REASON_ANNOTATION: &str = "AnnotationIgnored";
pub const REASON_INVALID: &str = "Invalid";

/// A problem: object, field, message.
pub type Key = (String, String, String);

/// Remembers which problems have been posted.
#[derive(Default)]
pub struct EventReporter {
    posted: HashSet<Key>,
}

impl EventReporter {
    /// The Events to post for `diagnostics`: those about an Ingress of the snapshot that were
    /// not posted yet. Forgets problems that are gone.
    pub fn plan(
        &mut self,
        ingresses: &[Ingress],
        diagnostics: &[Diagnostic],
        rejected: &[IngressRef],
        instance: &str,
    ) -> Vec<(Key, Event)> {
        let by_ref: HashMap<String, &Ingress> = ingresses
            .iter()
            .map(|i| (object_ref(&i.metadata), i))
            .collect();
        let rejected: HashSet<String> = rejected.iter().map(ToString::to_string).collect();
        let mut current = HashSet::new();
        let mut events = Vec::new();
        for d in diagnostics {
            let Some(ing) = by_ref.get(&d.object) else {
                continue;
            };
            let key = (d.object.clone(), d.field.clone(), d.message.clone());
            if !current.insert(key.clone()) || self.posted.contains(&key) {
                continue;
            }
            let reason = if d.severity == Severity::Error && rejected.contains(&d.object) {
                REASON_REJECTED
            } else if d.field.starts_with("metadata.annotations") {
                REASON_ANNOTATION
            } else {
                REASON_INVALID
            };
            events.push((key, event(ing, d, reason, instance)));
        }
        self.posted.retain(|k| current.contains(k));
        self.posted.extend(current);
        events
    }

    /// Forgets a problem whose Event could not be posted, so the next pass tries again.
    pub fn forget(&mut self, key: &Key) {
        self.posted.remove(key);
    }
}

fn message(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_string()
    } else {
        format!("{field}: {message}")
    }
}

fn event(ing: &Ingress, d: &Diagnostic, reason: &str, instance: &str) -> Event {
    let now = Timestamp::now();
    let namespace = ing
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = ing.metadata.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(Ingress::API_VERSION.into()),
            kind: Some(Ingress::KIND.into()),
            namespace: Some(namespace),
            name: Some(name),
            uid: ing.metadata.uid.clone(),
            resource_version: ing.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message(&d.field, &d.message)),
        // Every problem is a Warning to Kubernetes (its only other type is Normal).
        type_: Some("Warning".into()),
        action: Some("Translate".into()),
        source: Some(EventSource {
            component: Some(FIELD_MANAGER.into()),
            host: None,
        }),
        reporting_component: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Posts one Event in its Ingress's namespace.
pub async fn post(client: &Client, event: &Event) -> Result<(), kube::Error> {
    let ns = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(name: &str) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ml", "uid": "u-1"},
        }))
        .expect("ingress")
    }

    #[test]
    fn posted_once_while_it_lasts_and_again_when_it_returns() {
        let ings = [ingress("a")];
        let bad = Diagnostic::error("ml/a", "spec.rules[0]", "no such service");
        let other = Diagnostic::error("ml/zz", "spec", "not in the snapshot");
        let rejected = [IngressRef {
            namespace: "ml".into(),
            name: "a".into(),
        }];
        let mut r = EventReporter::default();
        let first = r.plan(&ings, &[bad.clone(), other], &rejected, "pod-1");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.reason.as_deref(), Some(REASON_REJECTED));
        assert_eq!(first[0].1.involved_object.uid.as_deref(), Some("u-1"));
        assert!(
            r.plan(&ings, std::slice::from_ref(&bad), &rejected, "pod-1")
                .is_empty()
        );
        assert!(r.plan(&ings, &[], &[], "pod-1").is_empty());
        assert_eq!(r.plan(&ings, &[bad], &rejected, "pod-1").len(), 1);
    }
}
