//! `auth-type: basic` at request time: the `Authorization: Basic` credentials checked
//! against the route's users (`htpasswd`), 401 with `WWW-Authenticate` otherwise. As nginx's
//! `auth_basic`, the header is passed on to the backend.
//!
//! bcrypt and SHA-crypt are slow on purpose (milliseconds to a few hundred), and a client
//! sends the same credentials with every request: a check runs on tokio's blocking pool, at
//! most one per CPU at a time (a flood of wrong passwords costs those cores, not a thread per
//! attempt), and credentials that passed are remembered (as a keyed 128-bit digest, never the
//! password) for as long as the route table that read them is served, up to [`REMEMBERED`].
use std::{
    collections::HashSet,
    hash::{BuildHasher, Hasher},
    sync::{Mutex, OnceLock},
};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::htpasswd::Htpasswd;
use crate::{
    proxy::{Body, local},
    translate::annotations::basic_auth::BasicAuthPolicy,
};

/// Verified credentials remembered per Secret and route table (then forgotten all at once).
pub const REMEMBERED: usize = 4096;

/// A route's users, and the credentials that passed lately. (`Debug` prints the number of
/// users only: password hashes stay out of logs and debug output.)
#[derive(Default)]
pub struct Credentials {
    users: Htpasswd,
    /// Two independently keyed SipHash states: a 128-bit tag per credential.
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    verified: Mutex<HashSet<u128>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(users: Htpasswd) -> Self {
        Self {
            users,
            ..Self::default()
        }
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    fn tag(&self, raw: &[u8]) -> u128 {
        let half = |k: &std::collections::hash_map::RandomState| {
            let mut h = k.build_hasher();
            h.write(raw);
            h.finish()
        };
        u128::from(half(&self.keys.0)) << 64 | u128::from(half(&self.keys.1))
    }

    fn remembered(&self, tag: u128) -> bool {
        self.verified.lock().is_ok_and(|v| v.contains(&tag))
    }

    fn remember(&self, tag: u128) {
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= REMEMBERED {
                v.clear();
            }
            v.insert(tag);
        }
    }
}

/// The decoded `user:password` of an `Authorization: Basic` header (the user is UTF-8),
/// and where its first colon is.
fn basic_credentials(headers: &HeaderMap) -> Option<(Vec<u8>, usize)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    std::str::from_utf8(&decoded[..colon]).ok()?;
    Some((decoded, colon))
}

/// `Ok` when the request carries the credentials of one of the route's users.
pub async fn check(policy: &BasicAuthPolicy, headers: &HeaderMap) -> Result<(), Response<Body>> {
    let Some((raw, colon)) = basic_credentials(headers) else {
        return Err(unauthorized(&policy.realm));
    };
    let creds = policy.credentials.clone();
    let tag = creds.tag(&raw);
    if creds.remembered(tag) {
        return Ok(());
    }
    let Ok(_permit) = verifiers().acquire().await else {
        return Err(unauthorized(&policy.realm));
    };
    let checker = creds.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let (user, password) = (&raw[..colon], &raw[colon + 1..]);
        std::str::from_utf8(user).is_ok_and(|user| checker.users.verify(user, password))
    })
    .await
    .unwrap_or(false);
    if ok {
        creds.remember(tag);
        Ok(())
    } else {
        Err(unauthorized(&policy.realm))
    }
}

/// Password checks allowed to run at once: one per CPU.
fn verifiers() -> &'static tokio::sync::Semaphore {
    static VERIFIERS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// 401 with the realm's challenge.
fn unauthorized(realm: &str) -> Response<Body> {
    let mut resp = local(StatusCode::UNAUTHORIZED, "401 Authorization Required\n");
    let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{escaped}\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::translate::annotations::basic_auth::SecretType;

    fn policy(file: &str) -> BasicAuthPolicy {
        BasicAuthPolicy {
            realm: "MLflow \"prod\"".into(),
            secret_namespace: "ml".into(),
            secret_name: "mlflow-auth".into(),
            secret_type: SecretType::AuthFile,
            credentials: Arc::new(Credentials::new(Htpasswd::from_file(file).expect("file"))),
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("value"),
            );
        }
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[tokio::test]
    async fn right_credentials_pass_and_everything_else_gets_the_challenge() {
        // alice: "password" ($apr1$), bob: "s3cr:et" ({SHA}; a colon in a password is allowed: the
        // user ends at the first one).
        let p = policy(
            "alice:$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh.\nbob:{SHA}JKb6zaYafPIfMOjmQ7mUwI11CGs=\n",
        );
        assert!(
            check(&p, &headers(Some(&basic("alice:password"))))
                .await
                .is_ok()
        );
        assert!(
            check(&p, &headers(Some(&basic("bob:s3cr:et"))))
                .await
                .is_ok()
        );
        // The scheme is case-insensitive; surrounding space is tolerated.
        let lower = basic("alice:password").replace("Basic ", "basic  ");
        assert!(check(&p, &headers(Some(&lower))).await.is_ok());
        for bad in [
            None,
            Some(basic("alice:wrong")),
            Some(basic("mallory:password")),
            Some(basic("alice")),
            Some("Bearer abc".to_owned()),
            Some("Basic !!!not-base64".to_owned()),
        ] {
            let resp = check(&p, &headers(bad.as_deref()))
                .await
                .expect_err("refused");
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(
                resp.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"MLflow \\\"prod\\\"\"",
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn verified_credentials_are_remembered_by_tag_and_bounded() {
        let p = policy("alice:{PLAIN}password\n");
        let creds = &p.credentials;
        assert!(
            check(&p, &headers(Some(&basic("alice:password"))))
                .await
                .is_ok()
        );
        assert!(creds.remembered(creds.tag(b"alice:password")));
        assert!(!creds.remembered(creds.tag(b"alice:passwore")));
        // A refused attempt is not remembered.
        let _ = check(&p, &headers(Some(&basic("alice:nope")))).await;
        assert!(!creds.remembered(creds.tag(b"alice:nope")));
        for i in 0..REMEMBERED as u128 + 1 {
            creds.remember(i);
        }
        let size = creds.verified.lock().map(|v| v.len()).unwrap_or(0);
        assert!(size <= REMEMBERED, "{size}");
    }

    #[test]
    fn debug_output_has_no_password_hashes() {
        let p = policy("alice:$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh.\n");
        let text = format!("{p:?}");
        assert!(
            text.contains("users: 1") && !text.contains("apr1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn no_users_refuses_everyone() {
        let p = BasicAuthPolicy {
            credentials: Arc::default(),
            ..policy("")
        };
        assert!(
            check(&p, &headers(Some(&basic("alice:password"))))
                .await
                .is_err()
        );
    }
}
