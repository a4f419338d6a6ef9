//! `auth-secret`: the users of basic authentication, read from the Secret when the Ingress
//! is translated (`auth-file`: its `auth` key; `auth-map`: every key a user). A missing
//! Secret, an unreadable line or no users at all rejects the Ingress, naming the annotation:
//! a protected route is never published open.
use std::sync::Arc;

use super::{
    annotations::{IngressPolicy, basic_auth::SecretType},
    tls::{find_secret, secret_field},
};
use crate::{
    diagnostics::Diagnostic,
    policy::{basic_auth::Credentials, htpasswd::Htpasswd},
    provider::Snapshot,
};

pub fn resolve(
    policy: &mut IngressPolicy,
    snapshot: &Snapshot,
    object: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let Some(basic) = &mut policy.basic_auth else {
        return;
    };
    match users(
        snapshot,
        &basic.secret_namespace,
        &basic.secret_name,
        basic.secret_type,
    ) {
        Ok(users) => basic.credentials = Arc::new(Credentials::new(users)),
        Err(msg) => errors.push(Diagnostic::error(
            object,
            "metadata.annotations[nginx.ingress.kubernetes.io/auth-secret]",
            msg,
        )),
    }
}

fn users(snapshot: &Snapshot, ns: &str, name: &str, kind: SecretType) -> Result<Htpasswd, String> {
    let secret = find_secret(snapshot, ns, name)?;
    let users = match kind {
        SecretType::AuthFile => {
            let file = secret_field(secret, "auth")
                .ok_or_else(|| format!("Secret {ns}/{name} has no \"auth\" key (auth-file)"))?;
            let text = String::from_utf8(file)
                .map_err(|_| format!("Secret {ns}/{name} key \"auth\" is not text"))?;
            Htpasswd::from_file(&text)
                .map_err(|e| format!("Secret {ns}/{name} key \"auth\": {e}"))?
        }
        SecretType::AuthMap => {
            let mut keys: Vec<&str> = secret
                .string_data
                .iter()
                .flat_map(|d| d.keys())
                .chain(secret.data.iter().flat_map(|d| d.keys()))
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let mut entries = Vec::with_capacity(keys.len());
            for user in keys {
                let value = secret_field(secret, user).unwrap_or_default();
                let hash = String::from_utf8(value)
                    .map_err(|_| format!("Secret {ns}/{name} key {user:?} is not text"))?;
                entries.push((user, hash));
            }
            Htpasswd::from_map(entries.iter().map(|(u, h)| (*u, h.as_str())))
                .map_err(|e| format!("Secret {ns}/{name} (auth-map): {e}"))?
        }
    };
    if users.is_empty() {
        return Err(format!("Secret {ns}/{name} lists no users"));
    }
    Ok(users)
}
