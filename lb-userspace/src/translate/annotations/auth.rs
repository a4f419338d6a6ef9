//! External authentication: `auth-url`, `auth-method`, `auth-signin`,
//! `auth-response-headers`, `auth-proxy-set-headers` (a ConfigMap of headers, resolved by
//! translate).
use http::{HeaderName, Method, Uri};

use super::Reader;

#[derive(Clone, Debug, PartialEq)]
pub struct AuthPolicy {
    /// The auth service; only http:// URLs (the subrequest stays inside the cluster).
    pub url: Uri,
    pub method: Method,
    /// Where a 401 redirects, with `rd=<original URL>` appended.
    pub signin: Option<String>,
    /// Headers of the auth response copied onto the upstream request.
    pub response_headers: Vec<HeaderName>,
    /// `namespace/name` of the ConfigMap named by `auth-proxy-set-headers`.
    pub proxy_set_headers_configmap: Option<String>,
    /// Its headers, set on the auth subrequest (filled by translate).
    pub proxy_set_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

pub fn parse(r: &Reader<'_>, namespace: &str) -> Option<AuthPolicy> {
    let method = r.get("auth-method");
    let signin = r.get("auth-signin").map(str::to_owned);
    let response_headers = r.get("auth-response-headers");
    let set_headers = r.get("auth-proxy-set-headers");
    let raw = r.get("auth-url")?;
    let url = r.http_url("auth-url", raw, raw, "auth services")?;
    let method = match method {
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                r.error("auth-method", format!("{m:?} is not an HTTP method"));
                Method::GET
            }
        },
    };
    let mut names = Vec::new();
    for h in response_headers
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => names.push(n),
            Err(_) => r.error(
                "auth-response-headers",
                format!("{h:?} is not a header name"),
            ),
        }
    }
    Some(AuthPolicy {
        url,
        method,
        signin,
        response_headers: names,
        proxy_set_headers_configmap: set_headers.map(|v| {
            if v.contains('/') {
                v.to_owned()
            } else {
                format!("{namespace}/{v}")
            }
        }),
        proxy_set_headers: Vec::new(),
    })
}
