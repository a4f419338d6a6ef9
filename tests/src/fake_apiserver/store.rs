//! The fake API server's state: objects per resource with one cluster-wide resourceVersion
//! counter, the event log watches are served from (compacted to force 410 Gone), and the
//! selectors and JSON merge patch the real server applies.
use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A resource the fake serves: API group, version, plural, kind.
#[derive(Clone, Copy, Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every kind the kube provider reads or writes.
pub const RESOURCES: &[ResourceType] = &[
    rt("networking.k8s.io", "v1", "ingresses", "Ingress"),
    rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass"),
    rt("", "v1", "services", "Service"),
    rt("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    rt("", "v1", "secrets", "Secret"),
    rt("", "v1", "configmaps", "ConfigMap"),
    rt("", "v1", "pods", "Pod"),
    rt("", "v1", "events", "Event"),
    rt("coordination.k8s.io", "v1", "leases", "Lease"),
];

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
    }
}

pub fn by_plural(group: &str, plural: &str) -> Option<ResourceType> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.plural == plural)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<ResourceType> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// One entry of the watch log.
#[derive(Clone, Debug)]
pub struct Change {
    pub plural: &'static str,
    pub rv: u64,
    pub kind: &'static str,
    pub object: Value,
}

#[derive(Default)]
pub struct Store {
    pub rv: u64,
    /// plural -> (namespace, name) -> object.
    pub objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    pub log: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub compacted: u64,
    next_uid: u64,
}

pub fn key_of(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl Store {
    /// Stores `obj` (create or replace), stamping uid and resourceVersion, and logs it.
    pub fn put(&mut self, rt: ResourceType, mut obj: Value) -> Value {
        self.rv += 1;
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            self.next_uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", self.next_uid));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let objects = self.objects.entry(rt.plural).or_default();
        let existed = objects.insert(key_of(&obj), obj.clone()).is_some();
        self.log.push(Change {
            plural: rt.plural,
            rv: self.rv,
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object: obj.clone(),
        });
        obj
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(plural)?
            .get(&(ns.to_string(), name.to_string()))
    }

    pub fn delete(&mut self, rt: ResourceType, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(rt.plural)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(Change {
            plural: rt.plural,
            rv: self.rv,
            kind: "DELETED",
            object: obj.clone(),
        });
        Some(obj)
    }

    /// Objects of `plural` in `ns` (all when `None`) matching the selectors.
    pub fn list(&self, plural: &str, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        self.objects
            .get(plural)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| ns.is_none_or(|ns| key_of(o).0 == ns) && sel.matches(o))
            .cloned()
            .collect()
    }

    /// Forgets history: every watch from an older resourceVersion must relist.
    pub fn compact(&mut self) {
        self.compacted = self.rv + 1;
        self.log.clear();
    }
}

/// `labelSelector` (`k=v`, `k==v`, `k`) and `fieldSelector` (`metadata.name`,
/// `metadata.namespace`, `type`), comma-separated, all of which must hold.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    labels: Vec<(String, Option<String>)>,
    fields: Vec<(String, String)>,
}

impl Selectors {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Self {
        let split = |s: Option<&str>| -> Vec<String> {
            s.unwrap_or_default()
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        };
        let labels = split(labels)
            .into_iter()
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.trim_start_matches('=').to_string())),
                None => (t, None),
            })
            .collect();
        let fields = split(fields)
            .into_iter()
            .filter_map(|t| {
                t.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.trim_start_matches('=').to_string()))
            })
            .collect();
        Self { labels, fields }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(k, v)| match v {
            Some(v) => labels[k].as_str() == Some(v),
            None => !labels[k].is_null(),
        });
        let fields_ok = self.fields.iter().all(|(k, v)| {
            let actual = match k.as_str() {
                "metadata.name" => &obj["metadata"]["name"],
                "metadata.namespace" => &obj["metadata"]["namespace"],
                other => &obj[other],
            };
            actual.as_str() == Some(v)
        });
        labels_ok && fields_ok
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, the rest replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(&mut t, &json!({"a": {"b": null, "c": [3]}, "e": "x"}));
        assert_eq!(t, json!({"a": {"c": [3]}, "d": 1, "e": "x"}));
    }

    #[test]
    fn selectors() {
        let o =
            json!({"metadata": {"name": "n", "labels": {"app": "x"}}, "type": "kubernetes.io/tls"});
        assert!(Selectors::parse(Some("app=x"), Some("type=kubernetes.io/tls")).matches(&o));
        assert!(Selectors::parse(Some("app"), Some("metadata.name==n")).matches(&o));
        assert!(!Selectors::parse(Some("app=y"), None).matches(&o));
        assert!(!Selectors::parse(None, Some("type=Opaque")).matches(&o));
    }
}
