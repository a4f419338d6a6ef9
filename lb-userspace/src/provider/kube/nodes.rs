//! The proxy node set in kube mode: the host IPs of the DaemonSet's Ready pods (selected by
//! `--node-selector` in the controller's namespace). Every node computes the same Maglev table
//! from this list, so it is sorted and deduplicated.
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Host IPs of the Ready pods among `pods`, sorted, without duplicates.
pub fn node_ips<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = pods
        .into_iter()
        .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .flat_map(host_ips)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `status.hostIPs` (dual-stack nodes have one per family), else `status.hostIP`.
fn host_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<IpAddr> = status
        .host_ips
        .iter()
        .flatten()
        .filter_map(|h| h.ip.parse().ok())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .host_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(host_ip: &str, ready: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{host_ip}")},
            "status": {
                "hostIP": host_ip,
                "conditions": [{"type": "Ready", "status": ready}],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn ready_pods_give_sorted_unique_host_ips() {
        let pods = [
            pod("198.18.0.3", "True"),
            pod("198.18.0.1", "True"),
            pod("198.18.0.2", "False"),
            pod("198.18.0.1", "True"),
            pod("not-an-ip", "True"),
        ];
        let ips = node_ips(&pods);
        assert_eq!(
            ips,
            [
                "198.18.0.1".parse::<IpAddr>().expect("ip"),
                "198.18.0.3".parse().expect("ip")
            ]
        );
    }

    #[test]
    fn dual_stack_host_ips_win_over_host_ip() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "hostIP": "198.18.0.9",
                "hostIPs": [{"ip": "198.18.0.9"}, {"ip": "2001:db8::9"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .expect("pod");
        assert_eq!(node_ips([&p]).len(), 2);
    }
}
