//! Request/response header handling at the proxy boundary (RFC 9110 section 7.6.1).
use std::{io::Write as _, net::SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header, uri};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers RFC 9110 7.6.1 names (and `Proxy-Connection`).
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// The authority a request asked for, borrowed from it (see [`requested_authority`]).
#[derive(Clone, Copy, Debug)]
pub enum Authority<'a> {
    /// From the request target: HTTP/1.1 absolute-form, or h2's `:authority`.
    Target(&'a uri::Authority),
    /// From the Host header.
    Host(&'a HeaderValue),
}

impl<'a> Authority<'a> {
    /// The raw bytes (a Host header need not be UTF-8).
    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            Authority::Target(a) => a.as_str().as_bytes(),
            Authority::Host(h) => h.as_bytes(),
        }
    }

    /// As text; `None` for a Host header that is not UTF-8.
    pub fn to_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// As a header value: a Host header is shared, not copied.
    pub fn to_value(self) -> Option<HeaderValue> {
        match self {
            Authority::Target(a) => HeaderValue::from_str(a.as_str()).ok(),
            Authority::Host(h) => Some(h.clone()),
        }
    }
}

/// The authority the client asked for, the one answer routing, `$host`, X-Forwarded-Host
/// and the upstream request use: the request target's when it has one (a proxy must
/// ignore Host for an absolute-form target, RFC 9112 3.2.2; h2's `:authority` wins over
/// Host, RFC 9113 8.3.1; nginx's `$host` takes the request line's first too), else the
/// Host header.
pub fn requested_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<Authority<'a>> {
    match uri.authority() {
        Some(a) => Some(Authority::Target(a)),
        None => headers.get(header::HOST).map(Authority::Host),
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Removes hop-by-hop headers: the fixed list and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of seven removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // The Connection values are copied out (a reference count each; nearly always one
    // value) so the names they list can be removed by `&str`: no `HeaderName` allocated per
    // message for the usual `Connection: keep-alive`.
    let mut values = headers.get_all(header::CONNECTION).iter();
    let first = values.next().cloned();
    let rest: Vec<HeaderValue> = values.cloned().collect();
    for v in first.iter().chain(&rest) {
        for name in v.to_str().unwrap_or_default().split(',') {
            let name = name.trim();
            if !name.is_empty() {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sets the X-Forwarded-* and X-Real-IP headers ingress-nginx sets by default: the client
/// address is appended to X-Forwarded-For, the others describe this hop.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    proto: &'static str,
    host: Option<&HeaderValue>,
    port: u16,
) {
    // The address is formatted once, on the stack; X-Real-IP shares its bytes.
    let mut buf = [0u8; 64];
    let ip = {
        let mut w = &mut buf[..];
        let _ = write!(w, "{}", client.ip());
        let left = w.len();
        &buf[..buf.len() - left]
    };
    let Ok(ip_value) = HeaderValue::from_bytes(ip) else {
        return;
    };
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(ip_value.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_REAL_IP.clone(), ip_value);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // The client's Host value itself (a cheap clone of bytes already received).
    let host = host
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    headers.insert(X_FORWARDED_HOST.clone(), host);
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_target_authority_wins_over_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("b.example"));
        let absolute: Uri = "http://a.example:8080/x".parse().expect("uri");
        let origin: Uri = "/x".parse().expect("uri");
        let a = requested_authority(&absolute, &h).expect("authority");
        assert!(matches!(a, Authority::Target(_)));
        assert_eq!(a.to_str(), Some("a.example:8080"));
        assert_eq!(
            a.to_value(),
            Some(HeaderValue::from_static("a.example:8080"))
        );
        let a = requested_authority(&origin, &h).expect("authority");
        assert!(matches!(a, Authority::Host(_)));
        assert_eq!(a.as_bytes(), b"b.example");
        assert!(requested_authority(&origin, &HeaderMap::new()).is_none());

        // A Host that is not UTF-8: the bytes as sent, no text.
        let mut h = HeaderMap::new();
        let raw = HeaderValue::from_bytes(b"caf\xe9.example").expect("obs-text is a valid value");
        h.insert(header::HOST, raw.clone());
        let a = requested_authority(&origin, &h).expect("authority");
        assert_eq!(a.as_bytes(), b"caf\xe9.example");
        assert_eq!(a.to_str(), None);
        assert_eq!(a.to_value(), Some(raw));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // Several Connection lines, mixed case, a token that is no header name, and one
        // naming Connection itself.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-One"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" , x-TWO ,bad name, connection"),
        );
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        set_forwarded(
            &mut h,
            "198.18.0.1:5555".parse().expect("addr"),
            "http",
            Some(&HeaderValue::from_static("a.example")),
            80,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.18.0.1");
        assert_eq!(h["x-real-ip"], "198.18.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-port"], "80");

        // First hop, IPv6 client, no Host: the longest address fits.
        let mut h = HeaderMap::new();
        let v6 = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:443";
        set_forwarded(&mut h, v6.parse().expect("addr"), "https", None, 443);
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(h["x-forwarded-for"], ip);
        assert_eq!(h["x-real-ip"], ip);
        assert_eq!(h["x-forwarded-host"], "");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
