//! Redirects: `ssl-redirect`, `force-ssl-redirect`, `permanent-redirect` (+`-code`),
//! `temporal-redirect`, `from-to-www-redirect`, and the backend's own redirects rewritten
//! (`proxy-redirect-from`, `proxy-redirect-to`).
use super::Reader;

#[derive(Clone, Debug, PartialEq)]
pub struct RedirectPolicy {
    /// Redirect plain HTTP to HTTPS (308) when the host has TLS (default true, as nginx).
    pub ssl_redirect: bool,
    /// Redirect to HTTPS even when the host has no TLS section.
    pub force_ssl_redirect: bool,
    /// Every request answered with this redirect (code, location).
    pub to: Option<(u16, String)>,
    /// `www.host` <-> `host` redirect (built into `RouteTable::www_redirects`).
    pub from_to_www: bool,
    /// `proxy-redirect-from` / `proxy-redirect-to`: the backend's `Location` (and
    /// `Refresh` URL) prefix replaced on the way to the client.
    pub rewrite_location: Option<(String, String)>,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self {
            ssl_redirect: true,
            force_ssl_redirect: false,
            to: None,
            from_to_www: false,
            rewrite_location: None,
        }
    }
}

/// nginx's `proxy_redirect FROM TO` as ingress-nginx writes it: both annotations, or
/// neither; `off` (ingress-nginx's default) is none.
fn rewrite_location(r: &Reader<'_>) -> Option<(String, String)> {
    let (from, to) = (r.get("proxy-redirect-from"), r.get("proxy-redirect-to"));
    match (from, to) {
        (None, None) => None,
        (Some(f), _) if f.eq_ignore_ascii_case("off") => None,
        (Some(f), _) if f.eq_ignore_ascii_case("default") => {
            r.error(
                "proxy-redirect-from",
                "\"default\" (nginx's rewrite from the proxy_pass URL) has no equivalent here; \
                 give the prefix to replace",
            );
            None
        }
        (Some(f), Some(t)) if !f.is_empty() => Some((f.to_owned(), t.to_owned())),
        (Some(_), Some(_)) => {
            r.error("proxy-redirect-from", "empty");
            None
        }
        (Some(_), None) => {
            r.error(
                "proxy-redirect-to",
                "proxy-redirect-from needs proxy-redirect-to",
            );
            None
        }
        (None, Some(_)) => {
            r.error(
                "proxy-redirect-from",
                "proxy-redirect-to needs proxy-redirect-from",
            );
            None
        }
    }
}

pub fn parse(r: &Reader<'_>) -> RedirectPolicy {
    let mut p = RedirectPolicy {
        ssl_redirect: r.bool("ssl-redirect").unwrap_or(true),
        force_ssl_redirect: r.bool("force-ssl-redirect").unwrap_or(false),
        to: None,
        from_to_www: r.bool("from-to-www-redirect").unwrap_or(false),
        rewrite_location: rewrite_location(r),
    };
    let code = r.parse::<u16>("permanent-redirect-code", "a redirect status code");
    if let Some(url) = r.get("permanent-redirect") {
        let code = match code {
            Some(c) if (300..=308).contains(&c) => c,
            Some(c) => {
                r.error(
                    "permanent-redirect-code",
                    format!("{c} is not a 3xx redirect code"),
                );
                301
            }
            None => 301,
        };
        p.to = Some((code, checked_url(r, "permanent-redirect", url)));
    }
    if let Some(url) = r.get("temporal-redirect") {
        if p.to.is_some() {
            r.warning(
                "temporal-redirect",
                "ignored: permanent-redirect takes precedence",
            );
        } else {
            p.to = Some((302, checked_url(r, "temporal-redirect", url)));
        }
    }
    p
}

fn checked_url(r: &Reader<'_>, name: &str, url: &str) -> String {
    if url.parse::<http::Uri>().is_err() || url.contains(char::is_whitespace) {
        r.error(name, format!("{url:?} is not a valid URL"));
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use crate::{diagnostics::Severity, translate::annotations::parse_nginx};

    /// The rewrite, and the errors (warnings dropped).
    fn parse(pairs: &[(&str, &str)]) -> (Option<(String, String)>, Vec<String>) {
        let (p, d) = parse_nginx(pairs);
        (
            p.redirect.rewrite_location,
            d.iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect(),
        )
    }

    #[test]
    fn proxy_redirect_from_and_to() {
        let both = [
            ("proxy-redirect-from", "http://mlflow:5000/"),
            ("proxy-redirect-to", "/mlflow/"),
        ];
        assert_eq!(
            parse(&both),
            (
                Some(("http://mlflow:5000/".into(), "/mlflow/".into())),
                vec![]
            )
        );
        assert_eq!(parse(&[("proxy-redirect-from", "off")]), (None, vec![]));
        for (pairs, want) in [
            (
                &[
                    ("proxy-redirect-from", "default"),
                    ("proxy-redirect-to", "/"),
                ][..],
                "proxy-redirect-from]: \"default\"",
            ),
            (
                &[("proxy-redirect-from", "http://a/")][..],
                "proxy-redirect-to]: proxy-redirect-from needs",
            ),
            (
                &[("proxy-redirect-to", "/")][..],
                "proxy-redirect-from]: proxy-redirect-to needs",
            ),
        ] {
            let (p, d) = parse(pairs);
            assert!(p.is_none(), "{pairs:?}");
            assert!(d.iter().any(|l| l.contains(want)), "{pairs:?}: {d:?}");
        }
    }
}
