//! Ingress status: the leader writes the VIPs into `status.loadBalancer.ingress` of every
//! Ingress it serves (so `kubectl get ingress` shows the ADDRESS) and takes them out of the
//! Ingresses it no longer serves (another class, deleted class, rejected). Level-triggered: the
//! plan compares what the snapshot shows with what it should show, so a restart, a lost
//! leadership or a failed patch is repaired by the next pass.
use std::{collections::HashSet, net::IpAddr};

use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::FIELD_MANAGER;
use crate::routes::IngressRef;

/// One status change: the complete new `status.loadBalancer.ingress` list of an Ingress.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub namespace: String,
    pub name: String,
    pub ingress: Vec<IngressLoadBalancerIngress>,
}

/// The patches that make every Ingress's status agree with what is served: the served ones
/// list every VIP (other entries, e.g. another controller's hostname, are kept), the others
/// list none of ours.
pub fn plan(ingresses: &[Ingress], served: &[IngressRef], vips: &[IpAddr]) -> Vec<StatusPatch> {
    let served: HashSet<(&str, &str)> = served
        .iter()
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    let ours: Vec<String> = vips.iter().map(IpAddr::to_string).collect();
    let is_ours =
        |e: &IngressLoadBalancerIngress| e.ip.as_ref().is_some_and(|ip| ours.contains(ip));
    let mut patches = Vec::new();
    for ing in ingresses {
        let namespace = ing.metadata.namespace.as_deref().unwrap_or("default");
        let Some(name) = ing.metadata.name.as_deref() else {
            continue;
        };
        let current: Vec<IngressLoadBalancerIngress> = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let mut wanted: Vec<IngressLoadBalancerIngress> =
            current.iter().filter(|e| !is_ours(e)).cloned().collect();
        if served.contains(&(namespace, name)) {
            wanted.extend(ours.iter().map(|ip| IngressLoadBalancerIngress {
                ip: Some(ip.clone()),
                ..Default::default()
            }));
        }
        if same_entries(&current, &wanted) {
            continue;
        }
        patches.push(StatusPatch {
            namespace: namespace.into(),
            name: name.into(),
            ingress: wanted,
        });
    }
    patches
}

/// Equal as sets: the order the API server returns is not ours to fight over.
fn same_entries(a: &[IngressLoadBalancerIngress], b: &[IngressLoadBalancerIngress]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// Sends one patch as a JSON merge patch of the status subresource under our field manager.
/// An empty list removes the field rather than leaving `ingress: []` behind.
pub async fn apply(client: &Client, patch: &StatusPatch) -> Result<(), kube::Error> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), &patch.namespace);
    let list = if patch.ingress.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&patch.ingress).unwrap_or(serde_json::Value::Null)
    };
    let body = json!({"status": {"loadBalancer": {"ingress": list}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(&patch.name, &params, &Patch::Merge(&body))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(name: &str, ips: &[&str]) -> Ingress {
        let entries: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml"},
            "status": {"loadBalancer": {"ingress": entries}},
        }))
        .expect("ingress")
    }

    fn served(name: &str) -> IngressRef {
        IngressRef {
            namespace: "ml".into(),
            name: name.into(),
        }
    }

    #[test]
    fn served_get_the_vips_unserved_lose_them_others_untouched() {
        let vip: IpAddr = "198.18.0.210".parse().expect("ip");
        let ingresses = [
            ingress("new", &[]),
            ingress("done", &["198.18.0.210"]),
            ingress("gone", &["198.18.0.210", "198.18.0.99"]),
            ingress("foreign", &["198.18.0.99"]),
        ];
        let patches = plan(&ingresses, &[served("new"), served("done")], &[vip]);
        let by_name = |n: &str| {
            patches
                .iter()
                .find(|p| p.name == n)
                .map(|p| p.ingress.clone())
        };
        let ips = |v: Option<Vec<IngressLoadBalancerIngress>>| -> Option<Vec<String>> {
            v.map(|v| v.into_iter().filter_map(|e| e.ip).collect())
        };
        assert_eq!(ips(by_name("new")), Some(vec!["198.18.0.210".to_string()]));
        assert_eq!(by_name("done"), None, "already right: no patch");
        assert_eq!(ips(by_name("gone")), Some(vec!["198.18.0.99".to_string()]));
        assert_eq!(by_name("foreign"), None, "not ours, not served: untouched");
    }
}
