//! Redirects: `ssl-redirect`, `force-ssl-redirect`, `permanent-redirect` (+`-code`),
//! `temporal-redirect`, `from-to-www-redirect`.
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
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self {
            ssl_redirect: true,
            force_ssl_redirect: false,
            to: None,
            from_to_www: false,
        }
    }
}

pub fn parse(r: &Reader<'_>) -> RedirectPolicy {
    let mut p = RedirectPolicy {
        ssl_redirect: r.bool("ssl-redirect").unwrap_or(true),
        force_ssl_redirect: r.bool("force-ssl-redirect").unwrap_or(false),
        to: None,
        from_to_www: r.bool("from-to-www-redirect").unwrap_or(false),
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
