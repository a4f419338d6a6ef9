//! Basic authentication: `auth-type: basic`, `auth-secret`, `auth-secret-type`
//! (`auth-file`: the Secret's `auth` key is an htpasswd file; `auth-map`: each key is a user,
//! its value the password hash), `auth-realm`. The Secret is read by translate
//! (`translate::basic_auth`); the check runs in `policy::basic_auth`.
//!
//! Access control that ebpf-lb does not implement rejects the Ingress instead of serving it
//! open: `auth-type: digest`, and client certificates (`auth-tls-secret` unless
//! `auth-tls-verify-client: "off"`). An ingress-nginx Ingress protected that way would
//! otherwise be published without its protection.
use std::sync::Arc;

use super::Reader;
use crate::policy::basic_auth::Credentials;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretType {
    AuthFile,
    AuthMap,
}

#[derive(Clone, Debug)]
pub struct BasicAuthPolicy {
    /// `auth-realm` (ingress-nginx's default: empty).
    pub realm: String,
    /// The Secret: the Ingress's namespace, `auth-secret`'s name.
    pub secret_namespace: String,
    pub secret_name: String,
    pub secret_type: SecretType,
    /// The users, read from the Secret by translate (none until then: everyone refused).
    pub credentials: Arc<Credentials>,
}

/// The annotation naming the users' Secret (the kube provider keeps the Secrets it names).
pub const AUTH_SECRET_ANNOTATION: &str = "nginx.ingress.kubernetes.io/auth-secret";

/// (namespace, name) of the Secret an `auth-secret` value names: `name` is in the
/// Ingress's namespace, or `namespace/name`.
pub fn secret_ref<'a>(value: &'a str, ingress_namespace: &'a str) -> (&'a str, &'a str) {
    value.split_once('/').unwrap_or((ingress_namespace, value))
}

/// The `auth-tls-*` annotations ingress-nginx reads.
const AUTH_TLS: [&str; 7] = [
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
    "auth-tls-no-verify-client-error-page",
];

pub fn parse(r: &Reader<'_>, namespace: &str) -> Option<BasicAuthPolicy> {
    client_certificates(r);
    let kind = r.get("auth-type");
    let secret = r.get("auth-secret");
    let secret_type = r.get("auth-secret-type");
    let realm = r.get("auth-realm");
    let Some(kind) = kind else {
        for (name, value) in [
            ("auth-secret", secret),
            ("auth-secret-type", secret_type),
            ("auth-realm", realm),
        ] {
            if value.is_some() {
                r.warning(name, "has no effect without auth-type: basic; ignored");
            }
        }
        return None;
    };
    match kind.to_ascii_lowercase().as_str() {
        "basic" => {}
        "digest" => {
            r.error(
                "auth-type",
                "digest authentication is not supported (use basic); the Ingress is not \
                 served rather than served without authentication",
            );
            return None;
        }
        _ => {
            r.error("auth-type", format!("{kind:?} is not basic or digest"));
            return None;
        }
    }
    let secret_type = match secret_type.map(str::to_ascii_lowercase).as_deref() {
        None | Some("auth-file") => SecretType::AuthFile,
        Some("auth-map") => SecretType::AuthMap,
        Some(other) => {
            r.error(
                "auth-secret-type",
                format!("{other:?} is not auth-file or auth-map"),
            );
            return None;
        }
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        r.error(
            "auth-secret",
            "auth-type: basic needs auth-secret (the htpasswd Secret)",
        );
        return None;
    };
    let (secret_namespace, secret_name) = secret_ref(secret, namespace);
    if secret_namespace != namespace {
        // As ingress-nginx's default (allow-cross-namespace-resources: false).
        r.error(
            "auth-secret",
            format!(
                "{secret:?} is in another namespace; the Secret must be in the Ingress's \
                 namespace {namespace:?}"
            ),
        );
        return None;
    }
    Some(BasicAuthPolicy {
        realm: realm.unwrap_or("").to_owned(),
        secret_namespace: secret_namespace.to_owned(),
        secret_name: secret_name.to_owned(),
        secret_type,
        credentials: Arc::default(),
    })
}

/// Client certificate authentication is not implemented: asking for it rejects the Ingress.
fn client_certificates(r: &Reader<'_>) {
    let given: Vec<&str> = AUTH_TLS
        .iter()
        .copied()
        .filter(|name| r.get(name).is_some())
        .collect();
    if r.get("auth-tls-secret").is_none() {
        for name in given {
            r.warning(name, "has no effect without auth-tls-secret; ignored");
        }
        return;
    }
    if r.get("auth-tls-verify-client")
        .is_some_and(|v| v.eq_ignore_ascii_case("off"))
    {
        r.warning(
            "auth-tls-secret",
            "auth-tls-verify-client is off: no client certificate is asked for; ignored",
        );
        return;
    }
    r.error(
        "auth-tls-secret",
        "client certificate authentication (auth-tls-*) is not supported; the Ingress is \
         not served rather than served without it",
    );
}
