//! `proxy-cookie-path` / `proxy-cookie-domain` at response time: the `Path` and `Domain`
//! attributes of each `Set-Cookie` from the backend, rewritten as nginx's
//! `proxy_cookie_path` (a prefix, compared in any case) and `proxy_cookie_domain` (the whole
//! domain, in any case, a leading dot ignored) do. Everything else in the header is kept
//! byte for byte.
use http::{HeaderMap, HeaderValue, header::SET_COOKIE};

use crate::translate::annotations::cookie::CookiePolicy;

/// Rewrites every `Set-Cookie` of `headers` that `p` applies to.
pub fn rewrite(p: &CookiePolicy, headers: &mut HeaderMap) {
    let rewritten: Vec<(HeaderValue, bool)> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            match v
                .to_str()
                .ok()
                .and_then(|c| rewrite_one(p, c))
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                Some(new) => (new, true),
                None => (v.clone(), false),
            }
        })
        .collect();
    if !rewritten.iter().any(|(_, changed)| *changed) {
        return;
    }
    headers.remove(SET_COOKIE);
    for (v, _) in rewritten {
        headers.append(SET_COOKIE, v);
    }
}

/// One `Set-Cookie` value with its attributes rewritten, or `None` when nothing applies.
fn rewrite_one(p: &CookiePolicy, cookie: &str) -> Option<String> {
    let mut out = String::with_capacity(cookie.len() + 16);
    let mut changed = false;
    for (i, attr) in cookie.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        let trimmed = attr.trim_start();
        let (name, value) = trimmed.split_once('=').unwrap_or((trimmed, ""));
        let new = if i == 0 {
            None // the cookie's own name=value
        } else if name.trim_end().eq_ignore_ascii_case("path") {
            p.path.as_ref().and_then(|(from, to)| {
                let head = value.get(..from.len())?;
                head.eq_ignore_ascii_case(from)
                    .then(|| format!("{to}{}", &value[from.len()..]))
            })
        } else if name.trim_end().eq_ignore_ascii_case("domain") {
            p.domain.as_ref().and_then(|(from, to)| {
                let bare = |d: &str| d.trim().strip_prefix('.').unwrap_or(d.trim()).to_owned();
                bare(value)
                    .eq_ignore_ascii_case(&bare(from))
                    .then(|| to.clone())
            })
        } else {
            None
        };
        match new {
            Some(v) => {
                out.push_str(&attr[..attr.len() - trimmed.len()]);
                out.push_str(name);
                out.push('=');
                out.push_str(&v);
                changed = true;
            }
            None => out.push_str(attr),
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(path: Option<(&str, &str)>, domain: Option<(&str, &str)>) -> CookiePolicy {
        let own = |p: Option<(&str, &str)>| p.map(|(f, t)| (f.to_owned(), t.to_owned()));
        CookiePolicy {
            path: own(path),
            domain: own(domain),
        }
    }

    fn rewritten(p: &CookiePolicy, cookies: &[&str]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(SET_COOKIE, HeaderValue::from_str(c).expect("value"));
        }
        h.append("x-other", HeaderValue::from_static("kept"));
        rewrite(p, &mut h);
        assert_eq!(h.get("x-other").map(|v| v.as_bytes()), Some(&b"kept"[..]));
        h.get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    }

    #[test]
    fn path_prefix_and_domain_rewritten_as_nginx_does() {
        let p = policy(
            Some(("/", "/mlflow/")),
            Some(("app.internal", "ml.example.com")),
        );
        assert_eq!(
            rewritten(
                &p,
                &[
                    "session=abc; Path=/; Domain=.APP.internal; HttpOnly; Secure",
                    "pref=dark;path=/ui/settings;SameSite=Lax",
                    "other=1; Domain=elsewhere.example; Max-Age=60",
                    "path=/not-an-attribute",
                ]
            ),
            [
                "session=abc; Path=/mlflow/; Domain=ml.example.com; HttpOnly; Secure",
                "pref=dark;path=/mlflow/ui/settings;SameSite=Lax",
                "other=1; Domain=elsewhere.example; Max-Age=60",
                "path=/not-an-attribute",
            ],
            "order kept; the cookie's own name=value never rewritten"
        );
        // A prefix in any case; a path elsewhere untouched.
        let p = policy(Some(("/Two/", "/")), None);
        assert_eq!(
            rewritten(&p, &["a=1; Path=/two/some/uri/", "b=2; Path=/three/"]),
            ["a=1; Path=/some/uri/", "b=2; Path=/three/"]
        );
        assert!(rewritten(&p, &[]).is_empty());
    }
}
