//! Upstream annotations: how requests reach the backend (protocol, balancing, affinity,
//! timeouts, retries, body limits). Implemented by the proxy (`proxy/`, `upstream/`,
//! `balance/`). Values and defaults are ingress-nginx's.
use std::time::Duration;

use super::Reader;

/// `backend-protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over cleartext with prior knowledge (gRPC).
    Grpc,
    /// HTTP/2 over TLS (gRPC).
    Grpcs,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

impl BackendProtocol {
    pub fn is_h2(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs | Self::H2c)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs)
    }
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalance {
    #[default]
    RoundRobin,
    /// Power of two choices weighted by EWMA latency and requests in flight.
    Ewma,
}

/// One piece of an `upstream-hash-by` key (nginx variable syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPart {
    Literal(String),
    /// `$remote_addr`: the client address.
    RemoteAddr,
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$host`.
    Host,
    /// `$http_<name>`: a request header (lower-case, `_` for `-`).
    Header(http::HeaderName),
    /// `$cookie_<name>`.
    Cookie(String),
    /// `$arg_<name>`: a query parameter.
    Arg(String),
}

/// `affinity: cookie` with its `session-cookie-*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    /// `session-cookie-name` (default INGRESSCOOKIE).
    pub name: String,
    /// `session-cookie-path` (default: the cookie is sent for every path, `/`).
    pub path: String,
    /// `session-cookie-max-age` in seconds (default: a session cookie).
    pub max_age: Option<u64>,
}

/// `proxy-next-upstream`: when a request moves on to another endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    /// `error`: connecting failed or the connection broke before a response.
    pub on_error: bool,
    /// `timeout`: connect or read timed out before a response.
    pub on_timeout: bool,
    /// `http_5xx` etc.: these response statuses.
    pub statuses: Vec<u16>,
    /// `non_idempotent`: also retry POST, PATCH, LOCK.
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        Self {
            on_error: true,
            on_timeout: true,
            statuses: Vec::new(),
            non_idempotent: false,
        }
    }
}

impl NextUpstream {
    pub const OFF: Self = Self {
        on_error: false,
        on_timeout: false,
        statuses: Vec::new(),
        non_idempotent: false,
    };
}

/// What the upstream annotations ask for. `Default` is ingress-nginx's default behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamPolicy {
    pub protocol: BackendProtocol,
    pub load_balance: LoadBalance,
    /// `upstream-hash-by`: consistent hashing on this key (overrides `load-balance`).
    pub hash_by: Option<Vec<HashPart>>,
    pub affinity: Option<CookieAffinity>,
    /// `proxy-connect-timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `proxy-send-timeout` (default 60 s): between two writes of the request upstream.
    pub send_timeout: Duration,
    /// `proxy-read-timeout` (default 60 s): for the response head, and between two reads
    /// of the response body.
    pub read_timeout: Duration,
    /// `proxy-body-size` (default 1m; `0`: unlimited).
    pub body_size: Option<u64>,
    /// `proxy-buffering`: accepted; responses are always streamed.
    pub buffering: bool,
    pub next_upstream: NextUpstream,
    /// `proxy-next-upstream-tries` (default 3; `0`: unlimited, bounded by the endpoints).
    pub tries: u32,
    /// `proxy-next-upstream-timeout` (default 0: no limit).
    pub next_upstream_timeout: Option<Duration>,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        Self {
            protocol: BackendProtocol::Http,
            load_balance: LoadBalance::RoundRobin,
            hash_by: None,
            affinity: None,
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            body_size: Some(1024 * 1024),
            buffering: false,
            next_upstream: NextUpstream::default(),
            tries: 3,
            next_upstream_timeout: None,
        }
    }
}

pub fn parse(r: &Reader<'_>) -> UpstreamPolicy {
    let mut p = UpstreamPolicy::default();
    if let Some(v) = r.get("backend-protocol") {
        match v.to_ascii_uppercase().as_str() {
            "HTTP" => p.protocol = BackendProtocol::Http,
            "HTTPS" => p.protocol = BackendProtocol::Https,
            "GRPC" => p.protocol = BackendProtocol::Grpc,
            "GRPCS" => p.protocol = BackendProtocol::Grpcs,
            "H2C" => p.protocol = BackendProtocol::H2c,
            "AUTO_HTTP" | "FCGI" => r.error(
                "backend-protocol",
                format!("{v:?} is not supported by ebpf-lb (HTTP, HTTPS, GRPC, GRPCS, H2C are)"),
            ),
            _ => r.error(
                "backend-protocol",
                format!("{v:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C"),
            ),
        }
    }
    // Backends' certificates are not checked (ingress-nginx's default, `proxy-ssl-verify:
    // off`); an Ingress asking for the check is not connected unverified.
    match r
        .get("proxy-ssl-verify")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("off") => {}
        Some("on") => r.error(
            "proxy-ssl-verify",
            "verifying backends' certificates is not supported; the Ingress is not served \
             rather than connected to its backends unverified",
        ),
        Some(v) => r.error("proxy-ssl-verify", format!("{v:?} is not on or off")),
    }
    if let Some(v) = r.get("load-balance") {
        match v {
            "round_robin" => p.load_balance = LoadBalance::RoundRobin,
            "ewma" => p.load_balance = LoadBalance::Ewma,
            _ => r.error("load-balance", format!("{v:?} is not round_robin or ewma")),
        }
    }
    if let Some(v) = r.get("upstream-hash-by") {
        match parse_hash_key(v) {
            Ok(parts) => p.hash_by = Some(parts),
            Err(msg) => r.error("upstream-hash-by", msg),
        }
    }
    let cookie_name = r.get("session-cookie-name");
    let cookie_path = r.get("session-cookie-path");
    let max_age = r.parse::<u64>("session-cookie-max-age", "a number of seconds");
    match r.get("affinity") {
        Some("cookie") => {
            let name = cookie_name.unwrap_or("INGRESSCOOKIE");
            if !is_cookie_token(name) {
                r.error(
                    "session-cookie-name",
                    format!("{name:?} is not a valid cookie name"),
                );
            }
            let path = cookie_path.unwrap_or("/");
            if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                r.error(
                    "session-cookie-path",
                    format!("{path:?} is not a cookie path"),
                );
            }
            p.affinity = Some(CookieAffinity {
                name: name.to_owned(),
                path: path.to_owned(),
                max_age,
            });
        }
        Some(other) => r.error(
            "affinity",
            format!("{other:?} is not supported (only \"cookie\")"),
        ),
        None => {
            for (name, set) in [
                ("session-cookie-name", cookie_name.is_some()),
                ("session-cookie-path", cookie_path.is_some()),
                ("session-cookie-max-age", max_age.is_some()),
            ] {
                if set {
                    r.warning(name, "ignored without affinity: cookie");
                }
            }
        }
    }
    for (name, slot) in [
        ("proxy-connect-timeout", &mut p.connect_timeout),
        ("proxy-send-timeout", &mut p.send_timeout),
        ("proxy-read-timeout", &mut p.read_timeout),
    ] {
        if let Some(v) = r.get(name) {
            match parse_duration(v) {
                Some(d) if !d.is_zero() => *slot = d,
                _ => r.error(
                    name,
                    format!("{v:?} is not a positive duration (e.g. 60, 60s, 500ms)"),
                ),
            }
        }
    }
    if let Some(v) = r.get("proxy-body-size") {
        match parse_size(v) {
            Some(0) => p.body_size = None,
            Some(n) => p.body_size = Some(n),
            None => r.error(
                "proxy-body-size",
                format!("{v:?} is not a size (e.g. 8m, 512k, 0)"),
            ),
        }
    }
    if let Some(v) = r.get("proxy-buffering") {
        match v {
            "on" => p.buffering = true,
            "off" => p.buffering = false,
            _ => r.error("proxy-buffering", format!("{v:?} is not on or off")),
        }
    }
    if let Some(v) = r.get("proxy-next-upstream") {
        match parse_next_upstream(v) {
            Ok(n) => p.next_upstream = n,
            Err(msg) => r.error("proxy-next-upstream", msg),
        }
    }
    if let Some(t) = r.parse::<u32>("proxy-next-upstream-tries", "a number of tries") {
        p.tries = t;
    }
    if let Some(v) = r.get("proxy-next-upstream-timeout") {
        match parse_duration(v) {
            Some(d) if d.is_zero() => p.next_upstream_timeout = None,
            Some(d) => p.next_upstream_timeout = Some(d),
            None => r.error(
                "proxy-next-upstream-timeout",
                format!("{v:?} is not a duration"),
            ),
        }
    }
    p
}

/// nginx time syntax: a number of seconds, or with a unit (`ms`, `s`, `m`, `h`).
pub fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// nginx size syntax: bytes, or with `k`/`m`/`g` (either case).
pub fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_next_upstream(v: &str) -> Result<NextUpstream, String> {
    let mut n = NextUpstream::OFF;
    for word in v.split_whitespace() {
        match word {
            "off" => return Ok(NextUpstream::OFF),
            "error" => n.on_error = true,
            "timeout" => n.on_timeout = true,
            "non_idempotent" => n.non_idempotent = true,
            // nginx's invalid_header is covered by `error` here: a malformed head is an error.
            "invalid_header" => n.on_error = true,
            _ => {
                let status = word
                    .strip_prefix("http_")
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|s| matches!(s, 403 | 404 | 429 | 500 | 502 | 503 | 504));
                match status {
                    Some(s) => n.statuses.push(s),
                    None => {
                        return Err(format!(
                            "{word:?} is not one of error, timeout, invalid_header, http_500, \
                             http_502, http_503, http_504, http_403, http_404, http_429, \
                             non_idempotent, off"
                        ));
                    }
                }
            }
        }
    }
    Ok(n)
}

/// Parses `$remote_addr`, `$request_uri`, `$host`, `$http_x`, `$cookie_x`, `$arg_x` and
/// literal text between them.
pub fn parse_hash_key(v: &str) -> Result<Vec<HashPart>, String> {
    let mut parts = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let Some(dollar) = rest.find('$') else {
            parts.push(HashPart::Literal(rest.to_owned()));
            break;
        };
        if dollar > 0 {
            parts.push(HashPart::Literal(rest[..dollar].to_owned()));
        }
        let after = &rest[dollar + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{v:?}: unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        parts.push(hash_var(name).ok_or_else(|| {
            format!(
                "{v:?}: ${name} is not supported ($remote_addr, $request_uri, $host, \
                 $http_<name>, $cookie_<name>, $arg_<name> are)"
            )
        })?);
        rest = tail;
    }
    if !parts.iter().any(|p| !matches!(p, HashPart::Literal(_))) {
        return Err(format!(
            "{v:?} names no variable: every request would hash alike"
        ));
    }
    Ok(parts)
}

fn hash_var(name: &str) -> Option<HashPart> {
    match name {
        "remote_addr" | "binary_remote_addr" => return Some(HashPart::RemoteAddr),
        "request_uri" => return Some(HashPart::RequestUri),
        "host" => return Some(HashPart::Host),
        _ => {}
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if let Some(h) = name.strip_prefix("http_") {
        return http::HeaderName::from_bytes(h.replace('_', "-").as_bytes())
            .ok()
            .map(HashPart::Header);
    }
    if let Some(c) = name.strip_prefix("cookie_") {
        return non_empty(c).map(HashPart::Cookie);
    }
    name.strip_prefix("arg_")
        .and_then(non_empty)
        .map(HashPart::Arg)
}

fn is_cookie_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnostics::Severity, translate::annotations::parse_nginx};

    fn policy(pairs: &[(&str, &str)]) -> (UpstreamPolicy, Vec<crate::diagnostics::Diagnostic>) {
        let (p, d) = parse_nginx(pairs);
        (p.upstream, d)
    }

    fn ok(pairs: &[(&str, &str)]) -> UpstreamPolicy {
        let (p, d) = policy(pairs);
        assert!(d.is_empty(), "{pairs:?}: {d:?}");
        p
    }

    fn rejected(pairs: &[(&str, &str)]) -> String {
        let (_, d) = policy(pairs);
        let e = d
            .iter()
            .find(|d| d.severity == Severity::Error)
            .unwrap_or_else(|| panic!("{pairs:?} accepted: {d:?}"));
        e.to_string()
    }

    #[test]
    fn defaults_are_ingress_nginx_defaults() {
        let p = ok(&[]);
        assert_eq!(p, UpstreamPolicy::default());
        assert_eq!(p.connect_timeout, Duration::from_secs(5));
        assert_eq!(p.body_size, Some(1 << 20));
        assert_eq!(p.tries, 3);
        assert!(p.next_upstream.on_error && p.next_upstream.on_timeout);
    }

    #[test]
    fn accepted_values() {
        type Row = (
            &'static [(&'static str, &'static str)],
            fn(&UpstreamPolicy) -> bool,
        );
        let table: &[Row] = &[
            (&[("backend-protocol", "GRPC")], |p| {
                p.protocol == BackendProtocol::Grpc
            }),
            (&[("backend-protocol", "grpcs")], |p| {
                p.protocol == BackendProtocol::Grpcs
            }),
            (&[("backend-protocol", "HTTPS")], |p| p.protocol.is_tls()),
            (
                &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "off")],
                |p| p.protocol.is_tls(),
            ),
            (&[("backend-protocol", "H2C")], |p| {
                p.protocol.is_h2() && !p.protocol.is_tls()
            }),
            (&[("load-balance", "ewma")], |p| {
                p.load_balance == LoadBalance::Ewma
            }),
            (&[("load-balance", "round_robin")], |p| {
                p.load_balance == LoadBalance::RoundRobin
            }),
            (&[("upstream-hash-by", "$remote_addr")], |p| {
                p.hash_by == Some(vec![HashPart::RemoteAddr])
            }),
            (&[("upstream-hash-by", "$http_x_user_id")], |p| {
                p.hash_by
                    == Some(vec![HashPart::Header(http::HeaderName::from_static(
                        "x-user-id",
                    ))])
            }),
            (&[("upstream-hash-by", "${cookie_sid}-$request_uri")], |p| {
                p.hash_by
                    == Some(vec![
                        HashPart::Cookie("sid".into()),
                        HashPart::Literal("-".into()),
                        HashPart::RequestUri,
                    ])
            }),
            (&[("affinity", "cookie")], |p| {
                p.affinity
                    == Some(CookieAffinity {
                        name: "INGRESSCOOKIE".into(),
                        path: "/".into(),
                        max_age: None,
                    })
            }),
            (
                &[
                    ("affinity", "cookie"),
                    ("session-cookie-name", "route"),
                    ("session-cookie-path", "/model"),
                    ("session-cookie-max-age", "3600"),
                ],
                |p| {
                    p.affinity
                        == Some(CookieAffinity {
                            name: "route".into(),
                            path: "/model".into(),
                            max_age: Some(3600),
                        })
                },
            ),
            (&[("proxy-connect-timeout", "2")], |p| {
                p.connect_timeout == Duration::from_secs(2)
            }),
            (&[("proxy-read-timeout", "500ms")], |p| {
                p.read_timeout == Duration::from_millis(500)
            }),
            (&[("proxy-send-timeout", "2m")], |p| {
                p.send_timeout == Duration::from_secs(120)
            }),
            (&[("proxy-body-size", "8m")], |p| {
                p.body_size == Some(8 << 20)
            }),
            (&[("proxy-body-size", "512K")], |p| {
                p.body_size == Some(512 << 10)
            }),
            (&[("proxy-body-size", "0")], |p| p.body_size.is_none()),
            (&[("proxy-buffering", "on")], |p| p.buffering),
            (
                &[("proxy-next-upstream", "error timeout http_502 http_503")],
                |p| p.next_upstream.statuses == [502, 503] && p.next_upstream.on_error,
            ),
            (&[("proxy-next-upstream", "off")], |p| {
                p.next_upstream == NextUpstream::OFF
            }),
            (&[("proxy-next-upstream", "http_504 non_idempotent")], |p| {
                !p.next_upstream.on_error && p.next_upstream.non_idempotent
            }),
            (&[("proxy-next-upstream-tries", "5")], |p| p.tries == 5),
            (&[("proxy-next-upstream-timeout", "10")], |p| {
                p.next_upstream_timeout == Some(Duration::from_secs(10))
            }),
            (&[("proxy-next-upstream-timeout", "0")], |p| {
                p.next_upstream_timeout.is_none()
            }),
        ];
        for (pairs, check) in table {
            assert!(check(&ok(pairs)), "{pairs:?}");
        }
    }

    #[test]
    fn rejected_values_name_the_annotation() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[("backend-protocol", "FCGI")],
                "backend-protocol]: \"FCGI\" is not supported",
            ),
            (&[("backend-protocol", "SMTP")], "backend-protocol]"),
            (&[("load-balance", "chash")], "load-balance]"),
            (&[("upstream-hash-by", "$server_name")], "upstream-hash-by]"),
            (&[("upstream-hash-by", "constant")], "names no variable"),
            (&[("upstream-hash-by", "${cookie_x")], "unclosed"),
            (&[("affinity", "ip")], "affinity]"),
            (
                &[("affinity", "cookie"), ("session-cookie-name", "a;b")],
                "session-cookie-name]",
            ),
            (
                &[("affinity", "cookie"), ("session-cookie-path", "x")],
                "session-cookie-path]",
            ),
            (
                &[("session-cookie-max-age", "soon")],
                "session-cookie-max-age]",
            ),
            (&[("proxy-connect-timeout", "0")], "proxy-connect-timeout]"),
            (&[("proxy-read-timeout", "1d")], "proxy-read-timeout]"),
            (&[("proxy-body-size", "big")], "proxy-body-size]"),
            (&[("proxy-buffering", "yes")], "proxy-buffering]"),
            (
                &[("proxy-next-upstream", "http_418")],
                "proxy-next-upstream]",
            ),
            (
                &[("proxy-next-upstream-tries", "-1")],
                "proxy-next-upstream-tries]",
            ),
            (
                &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")],
                "proxy-ssl-verify]: verifying backends' certificates is not supported",
            ),
            (&[("proxy-ssl-verify", "yes")], "proxy-ssl-verify]"),
        ];
        for (pairs, want) in table {
            let e = rejected(pairs);
            assert!(
                e.starts_with("ns/i: metadata.annotations[nginx.ingress.kubernetes.io/"),
                "{e}"
            );
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn cookie_settings_without_affinity_warn() {
        let (p, d) = policy(&[("session-cookie-name", "x")]);
        assert!(p.affinity.is_none());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Warning);
    }
}
