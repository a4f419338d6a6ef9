//! Ingress annotations: ingress-nginx names read as they are
//! (`nginx.ingress.kubernetes.io/<name>`), so migrating is a change of `ingressClassName`;
//! features ingress-nginx lacks use `ebpf-lb.io/<name>`.
//!
//! Each group of annotations has its own module with a `parse(&Reader) -> Policy` function.
//! The [`Reader`] records which annotations were read, so any other annotation in the nginx
//! namespace is reported (never silently ignored), and snippet annotations — the
//! IngressNightmare attack surface — reject the Ingress.
pub mod access;
pub mod auth;
pub mod basic_auth;
pub mod canary;
pub mod cookie;
pub mod cors;
pub mod headers;
pub mod mirror;
pub mod ratelimit;
pub mod redirect;
pub mod rewrite;
pub mod upstream;

use std::{cell::RefCell, collections::BTreeMap, str::FromStr};

use crate::diagnostics::{Diagnostic, Severity};

pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";
pub const EBPF_LB_PREFIX: &str = "ebpf-lb.io/";

/// Annotations that inject raw nginx configuration: always rejected.
const SNIPPETS: &[&str] = &[
    "server-snippet",
    "configuration-snippet",
    "auth-snippet",
    "stream-snippet",
    "modsecurity-snippet",
];

/// Everything the annotations of one Ingress ask for.
#[derive(Clone, Debug, Default)]
pub struct IngressPolicy {
    pub upstream: upstream::UpstreamPolicy,
    pub rewrite: rewrite::RewritePolicy,
    pub redirect: redirect::RedirectPolicy,
    /// `proxy-cookie-path`, `proxy-cookie-domain`.
    pub cookies: cookie::CookiePolicy,
    /// `mirror-target` (with `mirror-request-body`, `mirror-host`).
    pub mirror: Option<mirror::MirrorPolicy>,
    pub cors: Option<cors::CorsPolicy>,
    pub access: access::AccessPolicy,
    pub rate_limit: Option<ratelimit::RateLimitPolicy>,
    /// `limit-rate`, `limit-rate-after`: each response's bandwidth.
    pub response_rate: Option<ratelimit::ResponseRate>,
    pub canary: Option<canary::CanaryPolicy>,
    pub auth: Option<auth::AuthPolicy>,
    pub basic_auth: Option<basic_auth::BasicAuthPolicy>,
    pub headers: headers::HeaderPolicy,
    /// `service-upstream`: send to the Service's ClusterIP instead of its endpoints.
    pub service_upstream: bool,
    /// `default-backend`: a Service (in the Ingress's namespace) answering this Ingress's
    /// 404s and 503s instead of the controller's.
    pub default_backend: Option<String>,
    /// `custom-http-errors`: backend statuses answered with the `default-backend`'s page.
    pub custom_http_errors: Vec<u16>,
    /// `server-alias`: more hosts served as this Ingress's host (lower case).
    pub server_aliases: Vec<String>,
    /// `enable-access-log: "false"` (default true): the access log does not get the
    /// requests (health checks, scrapes); they are still counted in the metrics.
    pub no_access_log: bool,
    /// `ssl-passthrough`: TLS connections for the Ingress's hosts are relayed to the
    /// backend of their `/` path without being terminated (see `RouteTable::passthrough`).
    pub ssl_passthrough: bool,
}

/// Reads one Ingress's annotations, recording what was read and what was wrong.
///
/// The annotations of our two prefixes are split out once, by name without the prefix
/// (an Ingress has a handful, and about a hundred names are asked for): a lookup is a short
/// scan with no allocation, which matters at 10k Ingresses per translation.
pub struct Reader<'a> {
    /// `nginx.ingress.kubernetes.io/<name>`: (name, value), in key order.
    nginx: Vec<(&'a str, &'a str)>,
    /// `ebpf-lb.io/<name>`: (name, value).
    ebpf_lb: Vec<(&'a str, &'a str)>,
    object: &'a str,
    /// Which of `nginx` something read (the rest are reported as unsupported).
    read: RefCell<Vec<bool>>,
    diagnostics: RefCell<Vec<Diagnostic>>,
}

impl<'a> Reader<'a> {
    pub fn new(annotations: &'a BTreeMap<String, String>, object: &'a str) -> Self {
        let split = |prefix: &str| -> Vec<(&'a str, &'a str)> {
            annotations
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
                .collect()
        };
        let nginx = split(NGINX_PREFIX);
        Self {
            read: RefCell::new(vec![false; nginx.len()]),
            nginx,
            ebpf_lb: split(EBPF_LB_PREFIX),
            object,
            diagnostics: RefCell::new(Vec::new()),
        }
    }

    fn field(name: &str) -> String {
        format!("metadata.annotations[{NGINX_PREFIX}{name}]")
    }

    /// The raw value of `nginx.ingress.kubernetes.io/<name>`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let i = self.nginx.iter().position(|(n, _)| *n == name)?;
        if let Some(seen) = self.read.borrow_mut().get_mut(i) {
            *seen = true;
        }
        Some(self.nginx[i].1.trim())
    }

    /// The raw value of `ebpf-lb.io/<name>`.
    pub fn get_ebpf_lb(&self, name: &str) -> Option<&'a str> {
        self.ebpf_lb
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim())
    }

    /// A parsed value; an unparsable one is an error naming the annotation (and `None`).
    pub fn parse<T: FromStr>(&self, name: &str, expected: &str) -> Option<T> {
        let raw = self.get(name)?;
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(name, format!("{raw:?} is not {expected}"));
                None
            }
        }
    }

    /// `"true"`/`"false"` (as ingress-nginx accepts them).
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.parse(name, "true or false")
    }

    /// Rejects the Ingress: the annotation is invalid.
    pub fn error(&self, name: &str, message: impl Into<String>) {
        self.diagnostics.borrow_mut().push(Diagnostic::error(
            self.object,
            Self::field(name),
            message,
        ));
    }

    /// Rejects the Ingress: the `ebpf-lb.io/<name>` annotation is invalid.
    pub fn error_ebpf_lb(&self, name: &str, message: impl Into<String>) {
        self.diagnostics.borrow_mut().push(Diagnostic::error(
            self.object,
            format!("metadata.annotations[{EBPF_LB_PREFIX}{name}]"),
            message,
        ));
    }

    /// Serves the Ingress, noting something about the annotation.
    pub fn warning(&self, name: &str, message: impl Into<String>) {
        self.diagnostics.borrow_mut().push(Diagnostic::warning(
            self.object,
            Self::field(name),
            message,
        ));
    }

    /// Reports nginx-namespace annotations nobody read, and rejects snippets.
    fn finish(self) -> Vec<Diagnostic> {
        let read = self.read.into_inner();
        let mut diags = self.diagnostics.into_inner();
        for (i, (name, _)) in self.nginx.iter().enumerate() {
            if SNIPPETS.contains(name) {
                diags.push(Diagnostic::error(
                    self.object,
                    Self::field(name),
                    "snippet annotations inject raw proxy configuration and are rejected \
                     (the IngressNightmare attack surface); use the dedicated annotations",
                ));
            } else if !read.get(i).copied().unwrap_or(false) {
                diags.push(Diagnostic::warning(
                    self.object,
                    Self::field(name),
                    "not supported by ebpf-lb; ignored",
                ));
            }
        }
        diags
    }
}

/// Parses every annotation group. The Ingress is rejected when any diagnostic is an error.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    object: &str,
) -> (IngressPolicy, Vec<Diagnostic>) {
    let namespace = object.split_once('/').map_or("default", |(ns, _)| ns);
    let r = Reader::new(annotations, object);
    let policy = IngressPolicy {
        upstream: upstream::parse(&r),
        rewrite: rewrite::parse(&r),
        redirect: redirect::parse(&r),
        cookies: cookie::parse(&r),
        mirror: mirror::parse(&r),
        cors: cors::parse(&r),
        access: access::parse(&r),
        rate_limit: ratelimit::parse(&r),
        response_rate: ratelimit::response_rate(&r),
        canary: canary::parse(&r),
        auth: auth::parse(&r, namespace),
        basic_auth: basic_auth::parse(&r, namespace),
        headers: headers::parse(&r, namespace),
        service_upstream: r.bool("service-upstream").unwrap_or(false),
        default_backend: r.get("default-backend").map(str::to_owned),
        custom_http_errors: custom_http_errors(&r),
        no_access_log: !r.bool("enable-access-log").unwrap_or(true),
        server_aliases: server_aliases(&r),
        ssl_passthrough: r.bool("ssl-passthrough").unwrap_or(false),
    };
    (policy, r.finish())
}

/// `custom-http-errors`: comma-separated statuses (100-599). They need `default-backend`
/// (ebpf-lb has no controller-wide default backend to send them to).
fn custom_http_errors(r: &Reader<'_>) -> Vec<u16> {
    let Some(raw) = r.get("custom-http-errors") else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    for code in raw.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => codes.push(c),
            _ => r.error(
                "custom-http-errors",
                format!("{code:?} is not an HTTP status code"),
            ),
        }
    }
    if !codes.is_empty() && r.get("default-backend").is_none() {
        r.warning(
            "custom-http-errors",
            "has no effect without default-backend (the Service that serves the error pages)",
        );
    }
    codes
}

/// `server-alias`: comma-separated host names (exact: nginx's wildcard and regex names are
/// not taken).
fn server_aliases(r: &Reader<'_>) -> Vec<String> {
    let Some(raw) = r.get("server-alias") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for alias in raw.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if alias.len() <= 253 && crate::translate::is_dns_name(alias) {
            out.push(alias.to_ascii_lowercase());
        } else {
            r.error(
                "server-alias",
                format!("{alias:?} is not a host name (exact names only)"),
            );
        }
    }
    out
}

impl IngressPolicy {
    /// The annotation features in effect, for `ebpf-lb routes` (short names).
    pub fn summary(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let up = &self.upstream;
        let default_up = upstream::UpstreamPolicy::default();
        let flags: [(bool, &'static str); 24] = [
            (self.rewrite.target.is_some(), "rewrite"),
            (
                self.rewrite.regex_paths && self.rewrite.target.is_none(),
                "regex",
            ),
            (self.rewrite.app_root.is_some(), "app-root"),
            (self.redirect.to.is_some(), "redirect"),
            (self.redirect.force_ssl_redirect, "force-ssl-redirect"),
            (!self.redirect.ssl_redirect, "no-ssl-redirect"),
            (self.cors.is_some(), "cors"),
            (
                !self.access.allow.is_empty() || !self.access.deny.is_empty(),
                "source-ranges",
            ),
            (self.rate_limit.is_some(), "rate-limit"),
            (self.response_rate.is_some(), "limit-rate"),
            (self.auth.is_some(), "auth-url"),
            (self.basic_auth.is_some(), "basic-auth"),
            (self.redirect.rewrite_location.is_some(), "proxy-redirect"),
            (!self.cookies.is_empty(), "proxy-cookie"),
            (self.mirror.is_some(), "mirror"),
            (self.no_access_log, "no-access-log"),
            (self.ssl_passthrough, "ssl-passthrough"),
            (
                !self.headers.request.is_empty() || self.headers.upstream_vhost.is_some(),
                "request-headers",
            ),
            (!self.headers.response.is_empty(), "response-headers"),
            (self.service_upstream, "service-upstream"),
            (self.default_backend.is_some(), "default-backend"),
            (!self.custom_http_errors.is_empty(), "custom-http-errors"),
            (up.protocol != default_up.protocol, "backend-protocol"),
            (
                up.load_balance != default_up.load_balance
                    || up.hash_by.is_some()
                    || up.affinity.is_some(),
                "balancing",
            ),
        ];
        out.extend(flags.iter().filter(|(on, _)| *on).map(|(_, name)| *name));
        if up != &default_up
            && (up.connect_timeout != default_up.connect_timeout
                || up.send_timeout != default_up.send_timeout
                || up.read_timeout != default_up.read_timeout
                || up.body_size != default_up.body_size
                || up.tries != default_up.tries
                || up.next_upstream != default_up.next_upstream)
        {
            out.push("upstream-limits");
        }
        out
    }
}

/// Test fixture: [`parse`] of `nginx.ingress.kubernetes.io/<name>` annotations given as
/// (name, value), for the Ingress `ns/i`.
#[cfg(test)]
pub(crate) fn parse_nginx(pairs: &[(&str, &str)]) -> (IngressPolicy, Vec<Diagnostic>) {
    let annotations: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), v.to_string()))
        .collect();
    parse(&annotations, "ns/i")
}

/// Whether any diagnostic rejects the object.
pub fn rejects(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn custom_http_errors_codes_and_their_default_backend() {
        let key = "nginx.ingress.kubernetes.io/custom-http-errors";
        let backend = ("nginx.ingress.kubernetes.io/default-backend", "pages");
        let (p, d) = parse(&ann(&[(key, "404, 503"), backend]), "ns/i");
        assert_eq!(p.custom_http_errors, [404, 503]);
        assert!(d.is_empty(), "{d:?}");
        let (_, d) = parse(&ann(&[(key, "404")]), "ns/i");
        assert!(
            d.len() == 1
                && d[0].severity == Severity::Warning
                && d[0].message.contains("without default-backend"),
            "{d:?}"
        );
        let (_, d) = parse(&ann(&[(key, "404,oops,700"), backend]), "ns/i");
        let errors: Vec<_> = d.iter().filter(|d| d.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 2, "{d:?}");
        assert!(
            errors[0]
                .message
                .contains("\"oops\" is not an HTTP status code")
        );
    }

    #[test]
    fn unknown_nginx_annotations_are_reported_others_ignored() {
        let a = ann(&[
            ("nginx.ingress.kubernetes.io/made-up-thing", "1"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]);
        let (_, diags) = parse(&a, "ns/i");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].severity, Severity::Warning);
        assert_eq!(
            diags[0].field,
            "metadata.annotations[nginx.ingress.kubernetes.io/made-up-thing]"
        );
    }

    #[test]
    fn snippets_are_rejected() {
        let a = ann(&[(
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "more_set_headers x;",
        )]);
        let (_, diags) = parse(&a, "ns/i");
        assert!(rejects(&diags));
        assert!(diags[0].to_string().starts_with(
            "ns/i: metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]: snippet"
        ));
    }
}
