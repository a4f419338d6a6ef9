//! The route table the proxy serves: an immutable snapshot built by `translate`, published
//! whole behind an atomic pointer (see `RouteStore`); a request runs to its end on the
//! snapshot it started with.
pub mod host;
pub mod path;

use std::{collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;

pub use host::{HostMatcher, request_host};
pub use path::{PathMatcher, PathType};

use crate::{balance::Backend, tls::CertTable, translate::annotations::IngressPolicy};

/// namespace/name of the Ingress a route came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct IngressRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for IngressRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What metrics and the access log say about the route a request took: built once per
/// route (and canary) when the table is translated, shared by its requests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The path as written in the Ingress.
    pub path: String,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub canary: bool,
    /// `enable-access-log: "false"`: the route's requests are counted, not logged.
    pub no_access_log: bool,
}

/// One compiled Ingress path.
#[derive(Debug)]
pub struct Route {
    pub ingress: IngressRef,
    /// The path as written in the Ingress (also the metrics label).
    pub path: String,
    pub path_type: PathType,
    pub backend: Arc<Backend>,
    /// What the Ingress's annotations ask for (shared by all its routes).
    pub policy: Arc<IngressPolicy>,
    /// The compiled path regex of a `PathType::Regex` route (for rewrite captures).
    pub regex: Option<regex::Regex>,
    /// Canary Ingresses for the same host and path, oldest first.
    pub canaries: Vec<Canary>,
    /// `default-backend` annotation: serves when `backend` has no ready endpoint.
    pub fallback: Option<Arc<Backend>>,
    /// Metrics and log labels of requests served by `backend`.
    pub labels: Arc<RouteInfo>,
}

/// A canary Ingress attached to a main route (ingress-nginx allows one per rule; ebpf-lb
/// allows several, evaluated oldest first).
#[derive(Debug)]
pub struct Canary {
    pub ingress: IngressRef,
    pub backend: Arc<Backend>,
    pub policy: Arc<IngressPolicy>,
    pub rule: crate::translate::annotations::canary::CanaryPolicy,
    /// Metrics and log labels of requests this canary serves: the main route's path and
    /// Ingress, this canary's service (set when it is attached to the main route).
    pub labels: Arc<RouteInfo>,
}

/// Where a request goes.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Rules with a host.
    pub hosts: HostMatcher<PathMatcher<Arc<Route>>>,
    /// Rules without a host: they apply to every request whose host has no rules.
    pub any_host: PathMatcher<Arc<Route>>,
    /// `spec.defaultBackend` of the oldest Ingress that has one: used when nothing matches.
    pub default_backend: Option<Arc<Route>>,
    /// Certificates by server name from the Ingresses' `spec.tls` (see `translate::tls`).
    pub tls: Arc<CertTable>,
    /// What a rate-limited request is answered with (ConfigMap `ebpf-lb`).
    pub limit_status: LimitStatus,
    /// `from-to-www-redirect`: a request for one of these hosts is redirected (308) to the
    /// host it maps to (`www.foo.com` -> `foo.com` for an Ingress of `foo.com`, and the
    /// reverse), unless some Ingress has rules for it (as ingress-nginx does).
    pub www_redirects: HashMap<String, String>,
    /// `server-alias`: a request or TLS handshake for one of these hosts is served as the
    /// host it maps to (its rules and its certificate), unless some Ingress has rules for
    /// the alias itself (as ingress-nginx does).
    pub aliases: HashMap<String, String>,
    /// The `--default-ssl-certificate` Secret's certificate in this snapshot (`None`: not
    /// set, or unusable; the self-signed one is served then). Taken from each snapshot, so
    /// a renewed default certificate is served without a restart.
    pub default_certificate: Option<Arc<rustls::sign::CertifiedKey>>,
    /// `ssl-passthrough`: TLS connections whose SNI names one of these hosts (lower case)
    /// are not terminated here but relayed whole, at the TCP level, to the backend of the
    /// host's `/` path (the backend terminates TLS itself).
    pub passthrough: HashMap<String, Passthrough>,
}

/// Where an `ssl-passthrough` host's TLS connections go.
#[derive(Debug)]
pub struct Passthrough {
    pub ingress: IngressRef,
    pub backend: Arc<Backend>,
    /// `proxy-connect-timeout` of the Ingress.
    pub connect_timeout: std::time::Duration,
}

/// Statuses for requests refused by an Ingress's limits (ingress-nginx's
/// `limit-req-status-code` and `limit-conn-status-code`; 503 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    /// Over `limit-rps` / `limit-rpm`.
    pub rate: http::StatusCode,
    /// Over `limit-connections`.
    pub connections: http::StatusCode,
}

impl Default for LimitStatus {
    fn default() -> Self {
        Self {
            rate: http::StatusCode::SERVICE_UNAVAILABLE,
            connections: http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl RouteTable {
    /// The route for a request, or `None` (the proxy answers 404).
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let paths = self
            .hosts
            .lookup(self.serving_host(host))
            .unwrap_or(&self.any_host);
        paths.lookup(path).or(self.default_backend.as_ref())
    }

    /// The host whose rules serve requests for `host` (lower case): `host` itself, or the
    /// host it is a `server-alias` of.
    pub fn serving_host<'a>(&'a self, host: &'a str) -> &'a str {
        if self.aliases.is_empty() {
            return host;
        }
        self.aliases.get(host).map_or(host, String::as_str)
    }

    /// The certificate for a TLS server name (any case) from the Ingresses' `spec.tls`:
    /// for a `server-alias`, that of the host it is an alias of (as nginx serves the alias
    /// from that host's server block); `None`: the default certificate applies.
    pub fn certificate_for(&self, server_name: &str) -> Option<&Arc<rustls::sign::CertifiedKey>> {
        if !self.aliases.is_empty() {
            let lower = server_name.to_ascii_lowercase();
            if let Some(host) = self.aliases.get(&lower) {
                return self.tls.lookup(host);
            }
        }
        self.tls.lookup(server_name)
    }

    /// The `ssl-passthrough` target for a TLS server name (lower case).
    pub fn passthrough_for(&self, server_name: &str) -> Option<&Passthrough> {
        self.passthrough.get(server_name)
    }

    /// Every route, sorted by host then path, for `ebpf-lb routes` and `/debug/routes`.
    pub fn rows(&self) -> Vec<(String, &Arc<Route>)> {
        let mut rows: Vec<(String, &Arc<Route>)> = Vec::new();
        for (host, paths) in self.hosts.iter() {
            rows.extend(paths.iter().map(|(_, _, r)| (host.clone(), r)));
        }
        rows.extend(self.any_host.iter().map(|(_, _, r)| ("*".to_owned(), r)));
        if let Some(r) = &self.default_backend {
            rows.push(("(default backend)".to_owned(), r));
        }
        rows.sort_by(|a, b| (&a.0, &a.1.path).cmp(&(&b.0, &b.1.path)));
        rows
    }
}

/// The live route table. Readers take a cheap snapshot per request; writers replace it whole.
#[derive(Debug, Default)]
pub struct RouteStore {
    current: ArcSwap<RouteTable>,
}

impl RouteStore {
    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    pub fn publish(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }
}

/// The route table as a text table (`ebpf-lb routes`): host, path, type, backends with
/// their share of traffic (canaries by weight), the Ingress and the annotations in effect.
pub fn render_table(table: &RouteTable) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<32} {:<6} {:<44} {:<30} ANNOTATIONS",
        "HOST", "PATH", "TYPE", "BACKENDS (ENDPOINTS)", "INGRESS"
    );
    for (host, r) in table.rows() {
        let _ = writeln!(
            s,
            "{:<26} {:<32} {:<6} {:<44} {:<30} {}",
            host,
            r.path,
            r.path_type.to_string(),
            backends_cell(r),
            r.ingress.to_string(),
            {
                let mut a = r.policy.summary();
                a.extend(r.canaries.iter().flat_map(|c| c.policy.summary()));
                a.sort_unstable();
                a.dedup();
                if a.is_empty() {
                    "-".to_owned()
                } else {
                    a.join(",")
                }
            }
        );
    }
    // Whole-host rows: server aliases, from-to-www redirects and TLS passthrough, by host.
    let mut host_rows: Vec<(&String, String, &str)> = table
        .aliases
        .iter()
        .map(|(alias, host)| (alias, format!("as {host}"), "server-alias"))
        .chain(
            table
                .www_redirects
                .iter()
                .map(|(from, to)| (from, format!("308 -> {to}"), "from-to-www-redirect")),
        )
        .chain(table.passthrough.iter().map(|(host, p)| {
            let ready = p.backend.endpoints.len();
            (
                host,
                format!("tls -> {} ({ready} ready)", p.backend),
                "ssl-passthrough",
            )
        }))
        .collect();
    host_rows.sort();
    for (host, what, annotation) in host_rows {
        let _ = writeln!(
            s,
            "{:<26} {:<32} {:<6} {:<44} {:<30} {annotation}",
            host, "*", "-", what, "-"
        );
    }
    s
}

/// `ns/svc:port 80% (2 ready), ns/canary:port 20% canary (1 ready)`.
fn backends_cell(r: &Route) -> String {
    let ready = |b: &Backend| b.endpoints.len();
    let weighted: f64 = r
        .canaries
        .iter()
        .map(|c| f64::from(c.rule.weight) / f64::from(c.rule.weight_total))
        .sum();
    let mut cells = vec![format!(
        "{} {:.0}% ({} ready)",
        r.backend,
        (1.0 - weighted).max(0.0) * 100.0,
        ready(&r.backend)
    )];
    for c in &r.canaries {
        let share = f64::from(c.rule.weight) / f64::from(c.rule.weight_total) * 100.0;
        let how = match (&c.rule.by_header, &c.rule.by_cookie) {
            (Some(h), _) => format!(" +header {h}"),
            (None, Some(k)) => format!(" +cookie {k}"),
            _ => String::new(),
        };
        cells.push(format!(
            "{} {share:.0}% canary{how} ({} ready)",
            c.backend,
            ready(&c.backend)
        ));
    }
    cells.join(", ")
}
