//! External authentication: `auth-url`, `auth-method`, `auth-signin`,
//! `auth-response-headers`, `auth-proxy-set-headers` (a ConfigMap of headers, resolved by
//! translate).
use http::{HeaderName, Method, Uri};

use super::Reader;

#[derive(Clone, Debug, PartialEq)]
pub struct AuthPolicy {
    /// The auth service: an absolute `http://` or `https://` URL, which may use the
    /// request's variables (see [`render`]), as in oauth2-proxy's `https://$host/oauth2/auth`.
    pub url: String,
    pub method: Method,
    /// Where a 401 redirects (variables as in `url`), with `rd=<original URL>` appended
    /// unless it has an `rd=` of its own (`...?rd=$escaped_request_uri`).
    pub signin: Option<String>,
    /// Headers of the auth response copied onto the upstream request.
    pub response_headers: Vec<HeaderName>,
    /// `namespace/name` of the ConfigMap named by `auth-proxy-set-headers`.
    pub proxy_set_headers_configmap: Option<String>,
    /// Its headers, set on the auth subrequest (filled by translate).
    pub proxy_set_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The nginx variables an `auth-url` or `auth-signin` may use, for one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestVars<'a> {
    /// `$scheme`: `http` or `https`.
    pub scheme: &'a str,
    /// `$host`: the request's host, lower case, without a port.
    pub host: &'a str,
    /// `$http_host`: the Host header (or `:authority`) as sent.
    pub http_host: &'a str,
    /// `$request_uri`: the path and query as sent (`$escaped_request_uri`: percent-encoded).
    pub request_uri: &'a str,
}

impl RequestVars<'static> {
    /// What translation checks templates with.
    pub const SAMPLE: Self = Self {
        scheme: "http",
        host: "host.invalid",
        http_host: "host.invalid",
        request_uri: "/",
    };
}

/// `template` with its variables replaced; `Err($name)` for a variable not in
/// [`RequestVars`].
pub fn render(template: &str, v: &RequestVars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let n = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        match &after[..n] {
            "scheme" => out.push_str(v.scheme),
            "host" => out.push_str(v.host),
            "http_host" => out.push_str(v.http_host),
            "request_uri" => out.push_str(v.request_uri),
            "escaped_request_uri" => out.push_str(&escape(v.request_uri)),
            other => return Err(format!("${other}")),
        }
        rest = &after[n..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-encodes `s` for use as a query value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unsupported(var: &str) -> String {
    format!(
        "{var} is not supported (the variables are $host, $http_host, $scheme, $request_uri, \
         $escaped_request_uri)"
    )
}

pub fn parse(r: &Reader<'_>, namespace: &str) -> Option<AuthPolicy> {
    let method = r.get("auth-method");
    let signin = r.get("auth-signin").map(str::to_owned);
    let response_headers = r.get("auth-response-headers");
    let set_headers = r.get("auth-proxy-set-headers");
    let raw = r.get("auth-url")?;
    let url = match render(raw, &RequestVars::SAMPLE) {
        Err(var) => {
            r.error("auth-url", unsupported(&var));
            return None;
        }
        Ok(sample) => match sample.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                raw.to_owned()
            }
            _ => {
                r.error(
                    "auth-url",
                    format!("{raw:?} is not an absolute http:// or https:// URL"),
                );
                return None;
            }
        },
    };
    if let Some(s) = &signin
        && let Err(var) = render(s, &RequestVars::SAMPLE)
    {
        r.error("auth-signin", unsupported(&var));
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::annotations::parse_nginx;

    #[test]
    fn variables_render_and_unknown_ones_reject() {
        let v = RequestVars {
            scheme: "https",
            host: "mlflow.example",
            http_host: "MLflow.example:8443",
            request_uri: "/ui/?a=1",
        };
        assert_eq!(
            render("$scheme://$host/oauth2/auth?h=$http_host&u=$request_uri&e=$escaped_request_uri", &v),
            Ok("https://mlflow.example/oauth2/auth?h=MLflow.example:8443&u=/ui/?a=1&e=%2Fui%2F%3Fa%3D1".to_owned())
        );
        assert_eq!(
            render("https://$hostname/x", &v),
            Err("$hostname".to_owned())
        );
        let (p, d) = parse_nginx(&[
            ("auth-url", "https://$host/oauth2/auth"),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(p.auth.expect("auth").url, "https://$host/oauth2/auth");
        for (name, value, want) in [
            (
                "auth-url",
                "https://$remote_addr/x",
                "$remote_addr is not supported",
            ),
            (
                "auth-url",
                "/oauth2/auth",
                "is not an absolute http:// or https:// URL",
            ),
        ] {
            let (p, d) = parse_nginx(&[(name, value)]);
            assert!(p.auth.is_none());
            assert!(
                d.iter().any(|d| d.to_string().contains(want)),
                "{value}: {d:?}"
            );
        }
        let (p, d) = parse_nginx(&[
            ("auth-url", "http://auth.svc/check"),
            ("auth-signin", "https://$server_name/start"),
        ]);
        assert!(p.auth.is_none());
        assert!(
            d.iter().any(|d| d
                .to_string()
                .contains("auth-signin]: $server_name is not supported")),
            "{d:?}"
        );
    }
}
