//! Global L7 settings from ConfigMap `ebpf-lb` in the controller's namespace, read with
//! ingress-nginx's key names: `limit-req-status-code` (answer to a request over `limit-rps`
//! / `limit-rpm`) and `limit-conn-status-code` (over `limit-connections`), both 503 by
//! default as in ingress-nginx. The kernel-policy keys of the same ConfigMap are read by
//! `dataplane::policy`; any other key is ignored here.
use http::StatusCode;

use crate::{diagnostics::Diagnostic, provider::Snapshot, routes::LimitStatus};

/// The ConfigMap both readers use.
pub const CONFIGMAP: &str = "ebpf-lb";

/// Reads the L7 settings; a value that cannot be used is a warning naming the ConfigMap and
/// key, and the default stays.
pub fn limit_status(
    snapshot: &Snapshot,
    namespace: &str,
    diags: &mut Vec<Diagnostic>,
) -> LimitStatus {
    let mut out = LimitStatus::default();
    let Some(data) = snapshot
        .config_maps
        .iter()
        .find(|c| {
            c.metadata.name.as_deref() == Some(CONFIGMAP)
                && c.metadata.namespace.as_deref().unwrap_or("default") == namespace
        })
        .and_then(|c| c.data.as_ref())
    else {
        return out;
    };
    for (key, slot) in [
        ("limit-req-status-code", &mut out.rate),
        ("limit-conn-status-code", &mut out.connections),
    ] {
        let Some(value) = data.get(key) else { continue };
        match status(value) {
            Ok(code) => *slot = code,
            Err(msg) => diags.push(Diagnostic::warning(
                format!("{namespace}/{CONFIGMAP}"),
                format!("data[{key}]"),
                format!("{msg}; {} is used", slot.as_u16()),
            )),
        }
    }
    out
}

/// A 4xx or 5xx status code.
fn status(value: &str) -> Result<StatusCode, String> {
    let n: u16 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a status code"))?;
    match StatusCode::from_u16(n) {
        Ok(code) if code.is_client_error() || code.is_server_error() => Ok(code),
        _ => Err(format!("{n} is not a 4xx or 5xx status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn snapshot(ns: &str, pairs: &[(&str, &str)]) -> Snapshot {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(CONFIGMAP.into());
        cm.metadata.namespace = Some(ns.into());
        cm.data = Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        Snapshot {
            config_maps: vec![cm],
            ..Snapshot::default()
        }
    }

    #[test]
    fn limit_status_codes_from_the_configmap() {
        let mut d = Vec::new();
        let s = snapshot(
            "ebpf-lb",
            &[
                ("limit-req-status-code", "429"),
                ("limit-conn-status-code", " 503 "),
            ],
        );
        let got = limit_status(&s, "ebpf-lb", &mut d);
        assert_eq!(
            (got.rate, got.connections),
            (
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE
            )
        );
        assert!(d.is_empty(), "{d:?}");
        // Another namespace's ConfigMap is not ours.
        let got = limit_status(&s, "other", &mut d);
        assert_eq!(got, LimitStatus::default());
    }

    #[test]
    fn bad_values_warn_and_keep_503() {
        let mut d = Vec::new();
        let s = snapshot(
            "ebpf-lb",
            &[
                ("limit-req-status-code", "200"),
                ("limit-conn-status-code", "lots"),
            ],
        );
        let got = limit_status(&s, "ebpf-lb", &mut d);
        assert_eq!(got, LimitStatus::default());
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "ebpf-lb/ebpf-lb: data[limit-req-status-code]: 200 is not a 4xx or 5xx status; 503 is used (warning)",
                "ebpf-lb/ebpf-lb: data[limit-conn-status-code]: \"lots\" is not a status code; 503 is used (warning)",
            ]
        );
    }
}
