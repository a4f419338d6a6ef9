//! Header annotations: `upstream-vhost`, `custom-headers` (a ConfigMap of response headers,
//! resolved by translate), and ebpf-lb's own `ebpf-lb.io/request-headers` /
//! `ebpf-lb.io/response-headers` (one `Name: value` per line), e.g. `Seldon-Model: fraud`
//! for Seldon Core 2's router.
use http::{HeaderName, HeaderValue};

use super::Reader;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderPolicy {
    /// Host header sent upstream.
    pub upstream_vhost: Option<HeaderValue>,
    /// `namespace/name` of the ConfigMap named by `custom-headers`.
    pub custom_headers_configmap: Option<String>,
    /// Set on the request before it goes upstream.
    pub request: Vec<(HeaderName, HeaderValue)>,
    /// Set on the response before it goes to the client.
    pub response: Vec<(HeaderName, HeaderValue)>,
}

pub fn parse(r: &Reader<'_>, namespace: &str) -> HeaderPolicy {
    let upstream_vhost = r
        .get("upstream-vhost")
        .and_then(|v| match HeaderValue::from_str(v) {
            Ok(h) if !v.is_empty() && !v.contains(char::is_whitespace) => Some(h),
            _ => {
                r.error("upstream-vhost", format!("{v:?} is not a valid host name"));
                None
            }
        });
    let custom_headers_configmap = r.get("custom-headers").map(|v| {
        if v.contains('/') {
            v.to_owned()
        } else {
            format!("{namespace}/{v}")
        }
    });
    HeaderPolicy {
        upstream_vhost,
        custom_headers_configmap,
        request: header_lines(r, "request-headers"),
        response: header_lines(r, "response-headers"),
    }
}

fn header_lines(r: &Reader<'_>, name: &str) -> Vec<(HeaderName, HeaderValue)> {
    let Some(raw) = r.get_ebpf_lb(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match parse_header_line(line) {
            Some(h) => out.push(h),
            None => r.error_ebpf_lb(name, format!("{line:?} is not a `Name: value` header line")),
        }
    }
    out
}

/// `Name: value` -> a header pair, or `None` when either part is invalid.
pub fn parse_header_line(line: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = line.split_once(':')?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = HeaderValue::from_str(value.trim()).ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_line_forms() {
        let (n, v) = parse_header_line("Seldon-Model: fraud-detector").expect("valid");
        assert_eq!(n, "seldon-model");
        assert_eq!(v, "fraud-detector");
        assert!(parse_header_line("no colon").is_none());
        assert!(parse_header_line("bad name: x").is_none());
        assert!(parse_header_line("X: a\u{7f}b").is_none());
    }
}
