//! Annotations that name a ConfigMap of headers (`custom-headers`,
//! `auth-proxy-set-headers`): the ConfigMap's `data` becomes header pairs. A missing
//! ConfigMap or an invalid header rejects the Ingress, naming the annotation.
use http::{HeaderName, HeaderValue};

use super::annotations::IngressPolicy;
use crate::{diagnostics::Diagnostic, provider::Snapshot};

pub fn resolve(
    policy: &mut IngressPolicy,
    snapshot: &Snapshot,
    object: &str,
    errors: &mut Vec<Diagnostic>,
) {
    if let Some(name) = policy.headers.custom_headers_configmap.clone() {
        match headers_of(snapshot, &name) {
            Ok(h) => policy.headers.response.extend(h),
            Err(msg) => errors.push(field_error(object, "custom-headers", msg)),
        }
    }
    if let Some(auth) = &mut policy.auth
        && let Some(name) = auth.proxy_set_headers_configmap.clone()
    {
        match headers_of(snapshot, &name) {
            Ok(h) => auth.proxy_set_headers = h,
            Err(msg) => errors.push(field_error(object, "auth-proxy-set-headers", msg)),
        }
    }
}

fn field_error(object: &str, annotation: &str, msg: String) -> Diagnostic {
    Diagnostic::error(
        object,
        format!("metadata.annotations[nginx.ingress.kubernetes.io/{annotation}]"),
        msg,
    )
}

/// Annotations whose value names a ConfigMap (`namespace/name`; a bare name is in
/// `default`, as ingress-nginx reads it).
pub const CONFIGMAP_ANNOTATIONS: [&str; 2] = [
    "nginx.ingress.kubernetes.io/custom-headers",
    "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
];

/// (namespace, name) of the ConfigMap an annotation value names.
pub fn configmap_ref(value: &str) -> (&str, &str) {
    value
        .trim()
        .split_once('/')
        .unwrap_or(("default", value.trim()))
}

fn headers_of(snapshot: &Snapshot, name: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let (ns, n) = configmap_ref(name);
    let cm = snapshot
        .config_maps
        .iter()
        .find(|c| {
            c.metadata.namespace.as_deref().unwrap_or("default") == ns
                && c.metadata.name.as_deref() == Some(n)
        })
        .ok_or_else(|| format!("ConfigMap {ns}/{n} not found"))?;
    let mut out = Vec::new();
    for (k, v) in cm.data.iter().flatten() {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("ConfigMap {ns}/{n}: key {k:?} is not a header name"))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            format!("ConfigMap {ns}/{n}: value of {k:?} is not a valid header value")
        })?;
        out.push((name, value));
    }
    Ok(out)
}
