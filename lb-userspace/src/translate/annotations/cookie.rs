//! `proxy-cookie-path`, `proxy-cookie-domain`: nginx's `proxy_cookie_path FROM TO` and
//! `proxy_cookie_domain FROM TO`, applied to the backend's `Set-Cookie` headers (see
//! `policy::cookie`). Each value is `FROM TO`, or `off` (none, the default).
use super::Reader;

/// The cookie attributes rewritten on the way to the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookiePolicy {
    /// A `Path` attribute starting with `.0` (any case) gets `.1` in its place.
    pub path: Option<(String, String)>,
    /// A `Domain` attribute equal to `.0` (any case, a leading dot ignored) becomes `.1`.
    pub domain: Option<(String, String)>,
}

impl CookiePolicy {
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.domain.is_none()
    }
}

pub fn parse(r: &Reader<'_>) -> CookiePolicy {
    CookiePolicy {
        path: from_to(r, "proxy-cookie-path"),
        domain: from_to(r, "proxy-cookie-domain"),
    }
}

/// `FROM TO` or `off`. nginx's regular expressions (`~FROM`) and variables are rejected
/// with the annotation named: they have no equivalent here.
fn from_to(r: &Reader<'_>, name: &str) -> Option<(String, String)> {
    let raw = r.get(name)?;
    if raw.eq_ignore_ascii_case("off") {
        return None;
    }
    let parts: Vec<&str> = raw.split_whitespace().collect();
    let [from, to] = parts[..] else {
        r.error(name, format!("{raw:?} is not \"FROM TO\" (or off)"));
        return None;
    };
    if from.starts_with('~') {
        r.error(
            name,
            format!("{from:?}: regular expressions are not supported; give the text to replace"),
        );
        return None;
    }
    if raw.contains('$') {
        r.error(name, format!("{raw:?}: nginx variables are not supported"));
        return None;
    }
    Some((from.to_owned(), to.to_owned()))
}

#[cfg(test)]
mod tests {
    use crate::translate::annotations::parse_nginx;

    #[test]
    fn from_to_off_and_what_is_rejected() {
        let (p, diags) = parse_nginx(&[
            ("proxy-cookie-path", "/ /mlflow/"),
            ("proxy-cookie-domain", " app.internal   ml.example.com "),
        ]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(p.cookies.path, Some(("/".into(), "/mlflow/".into())));
        assert_eq!(
            p.cookies.domain,
            Some(("app.internal".into(), "ml.example.com".into()))
        );
        let (p, diags) = parse_nginx(&[("proxy-cookie-path", "off")]);
        assert!(diags.is_empty() && p.cookies.is_empty(), "{diags:?}");
        for (value, want) in [
            ("/one", "is not \"FROM TO\""),
            ("/a /b /c", "is not \"FROM TO\""),
            ("~^/(.+)$ /$1", "regular expressions are not supported"),
            ("/ $host/", "nginx variables are not supported"),
        ] {
            let (p, diags) = parse_nginx(&[("proxy-cookie-path", value)]);
            assert!(p.cookies.is_empty());
            assert!(
                diags.iter().any(|d| d.to_string().contains(
                    "metadata.annotations[nginx.ingress.kubernetes.io/proxy-cookie-path]"
                ) && d.to_string().contains(want)),
                "{value}: {diags:?}"
            );
        }
    }
}
