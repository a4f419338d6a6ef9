//! `spec.tls` of accepted Ingresses -> the certificate table the HTTPS listener serves.
//! Ingresses come oldest first, so when two name the same host the oldest one's Secret wins.
//! A missing or unusable Secret is an error on `spec.tls[i].secretName`; the Ingress keeps
//! its routes and its hosts are served with the default certificate, as in ingress-nginx.
use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};
use rustls::sign::CertifiedKey;

use crate::{
    diagnostics::Diagnostic,
    provider::Snapshot,
    routes::IngressRef,
    tls::{CertTable, certified_key_from_pem},
};

const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Builds the certificate table from the accepted Ingresses (oldest first).
pub fn build(
    snapshot: &Snapshot,
    ingresses: &[(&Ingress, IngressRef)],
) -> (CertTable, Vec<Diagnostic>) {
    let mut table = CertTable::default();
    let mut diags = Vec::new();
    // Each Secret parsed once even when several Ingresses name it.
    let mut loaded: HashMap<(String, String), Result<Arc<CertifiedKey>, String>> = HashMap::new();
    for (ingress, iref) in ingresses {
        let object = iref.to_string();
        let Some(spec) = &ingress.spec else { continue };
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let field = format!("spec.tls[{i}].secretName");
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                diags.push(Diagnostic::warning(
                    &object,
                    field,
                    "no secretName: these hosts are served with the default certificate",
                ));
                continue;
            };
            let key = (iref.namespace.clone(), secret.to_owned());
            let cert = loaded
                .entry(key)
                .or_insert_with(|| load_secret(snapshot, &iref.namespace, secret).map(Arc::new))
                .clone();
            let cert = match cert {
                Ok(c) => c,
                Err(msg) => {
                    diags.push(Diagnostic::error(
                        &object,
                        field,
                        format!("{msg}; the hosts of this entry get the default certificate"),
                    ));
                    continue;
                }
            };
            // No hosts: the certificate covers the hosts of the Ingress's rules.
            let hosts: Vec<String> = match tls.hosts.as_ref().filter(|h| !h.is_empty()) {
                Some(h) => h.clone(),
                None => spec
                    .rules
                    .iter()
                    .flatten()
                    .filter_map(|r| r.host.clone())
                    .collect(),
            };
            for host in hosts.iter().filter(|h| !h.is_empty()) {
                if !table.insert_from_secret(host, cert.clone(), &iref.namespace, secret) {
                    diags.push(Diagnostic::warning(
                        &object,
                        format!("spec.tls[{i}].hosts"),
                        format!(
                            "host {host:?} already has a certificate from an older Ingress \
                             (or an earlier entry), which wins"
                        ),
                    ));
                }
            }
        }
    }
    (table, diags)
}

/// The certificate of the `kubernetes.io/tls` Secret `namespace/name` (`data` or
/// `stringData` keys `tls.crt` and `tls.key`).
pub fn load_secret(
    snapshot: &Snapshot,
    namespace: &str,
    name: &str,
) -> Result<CertifiedKey, String> {
    let secret = find_secret(snapshot, namespace, name)?;
    if let Some(t) = secret.type_.as_deref()
        && t != TLS_SECRET_TYPE
    {
        return Err(format!(
            "Secret {namespace}/{name} is of type {t:?}, not {TLS_SECRET_TYPE:?}"
        ));
    }
    let field = |key: &str| -> Result<Vec<u8>, String> {
        secret_field(secret, key).ok_or_else(|| format!("Secret {namespace}/{name} has no {key:?}"))
    };
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    certified_key_from_pem(&crt, &key).map_err(|e| format!("Secret {namespace}/{name}: {e}"))
}

/// The Secret `namespace/name` of the snapshot.
pub fn find_secret<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    name: &str,
) -> Result<&'a Secret, String> {
    snapshot
        .secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
        .ok_or_else(|| format!("Secret {namespace}/{name} not found"))
}

/// A Secret's value for `key` (`stringData` first, as the API server merges it).
pub fn secret_field(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

/// Test fixture: a `kubernetes.io/tls` Secret manifest (YAML document) holding a new
/// self-signed certificate for `host`.
#[cfg(test)]
pub(crate) fn secret_fixture(namespace: &str, name: &str, host: &str) -> String {
    let indent = |s: &str| -> String { s.lines().map(|l| format!("      {l}\n")).collect() };
    let (_, crt, key) = crate::tls::self_signed(&[host]).expect("self-signed");
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&crt),
        indent(&key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Severity;

    fn secret_yaml(name: &str, host: &str) -> String {
        secret_fixture("ml", name, host)
    }

    fn snapshot(yaml: &str) -> Snapshot {
        crate::provider::files::fixture(yaml)
    }

    const INGRESSES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: old, namespace: ml, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  tls:
    - {hosts: ["a.example.com", "*.models.example.com"], secretName: a-cert}
    - {hosts: ["c.example.com"], secretName: missing}
  rules: [{host: a.example.com}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: new, namespace: ml, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  tls: [{secretName: b-cert}]
  rules: [{host: b.example.com}, {host: a.example.com}]
"#;

    #[test]
    fn table_from_spec_tls() {
        let yaml = format!(
            "{}{}{INGRESSES}",
            secret_yaml("a-cert", "a.example.com"),
            secret_yaml("b-cert", "b.example.com")
        );
        let snap = snapshot(&yaml);
        let ings: Vec<(&Ingress, IngressRef)> = snap
            .ingresses
            .iter()
            .map(|i| {
                let name = i.metadata.name.clone().expect("name");
                (
                    i,
                    IngressRef {
                        namespace: "ml".into(),
                        name,
                    },
                )
            })
            .collect();
        let (table, diags) = build(&snap, &ings);
        assert_eq!(
            table.hosts(),
            ["*.models.example.com", "a.example.com", "b.example.com"]
        );
        let a = table.lookup("a.example.com").expect("a");
        let m = table.lookup("x.models.example.com").expect("wildcard");
        assert!(Arc::ptr_eq(a, m), "one Secret, one parsed key");
        assert!(!Arc::ptr_eq(a, table.lookup("b.example.com").expect("b")));
        // Each served host names its Secret (for the certificate metrics).
        let served: Vec<(&str, &str, &str)> = table
            .served()
            .iter()
            .map(|c| {
                (
                    c.host.as_str(),
                    c.namespace.as_str(),
                    c.secret_name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            served,
            [
                ("a.example.com", "ml", "a-cert"),
                ("*.models.example.com", "ml", "a-cert"),
                ("b.example.com", "ml", "b-cert"),
            ]
        );

        let errors: Vec<_> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{diags:?}");
        assert_eq!(errors[0].object, "ml/old");
        assert_eq!(errors[0].field, "spec.tls[1].secretName");
        assert!(errors[0].message.contains("Secret ml/missing not found"));
        // The newer Ingress's a.example.com (from its rules) loses to the older one.
        assert!(diags.iter().any(|d| d.object == "ml/new"
            && d.severity == Severity::Warning
            && d.message.contains("a.example.com")));
    }

    #[test]
    fn wrong_type_and_missing_keys() {
        let snap = snapshot(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ml}\ntype: Opaque\n\
             stringData: {x: y}\n",
        );
        let e = load_secret(&snap, "ml", "s").expect_err("opaque");
        assert!(e.contains("Opaque"), "{e}");
        let snap = snapshot(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ml}\n\
             type: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
        );
        let e = load_secret(&snap, "ml", "s").expect_err("no key");
        assert!(e.contains("tls.key") || e.contains("tls.crt"), "{e}");
    }
}
