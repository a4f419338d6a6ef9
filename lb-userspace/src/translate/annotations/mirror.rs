//! `mirror-target`, `mirror-request-body`, `mirror-host`: every request of the Ingress is
//! also sent, as a copy, to another service (a shadow deployment: a candidate model served
//! the live traffic), whose answers are discarded (see `policy::mirror`).
use http::HeaderValue;

use super::Reader;

/// Where requests are mirrored to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorPolicy {
    /// An absolute `http://` URL; `$request_uri` in it stands for the client's path and
    /// query (as ingress-nginx's examples write it: `http://shadow.ns.svc$request_uri`).
    pub target: String,
    /// `mirror-request-body` (default on): the copy carries the request body.
    pub request_body: bool,
    /// `mirror-host`: the copy's Host (default: the target's authority).
    pub host: Option<HeaderValue>,
}

const REQUEST_URI: &str = "$request_uri";

pub fn parse(r: &Reader<'_>) -> Option<MirrorPolicy> {
    let request_body = r
        .get("mirror-request-body")
        .map(|v| !v.eq_ignore_ascii_case("off"));
    let host = r.get("mirror-host");
    let target = r.get("mirror-target")?;
    let literal = target.replace(REQUEST_URI, "/");
    if literal.contains('$') {
        r.error(
            "mirror-target",
            format!("{target:?}: only the variable $request_uri is supported"),
        );
        return None;
    }
    match literal.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {}
        Ok(u) if u.scheme_str() == Some("https") => {
            r.error(
                "mirror-target",
                "https mirror targets are not supported yet; use an in-cluster http:// URL",
            );
            return None;
        }
        _ => {
            r.error(
                "mirror-target",
                format!("{target:?} is not an absolute http:// URL"),
            );
            return None;
        }
    }
    let host = match host.map(HeaderValue::from_str) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            r.error("mirror-host", "not a valid Host header value");
            return None;
        }
    };
    Some(MirrorPolicy {
        target: target.to_owned(),
        request_body: request_body.unwrap_or(true),
        host,
    })
}

impl MirrorPolicy {
    /// The copy's URL for a request of `path_and_query`: `$request_uri` replaced; a target
    /// without it is used as it is (as nginx's `proxy_pass` with a URI does).
    pub fn url(&self, path_and_query: &str) -> String {
        self.target.replace(REQUEST_URI, path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use crate::translate::annotations::parse_nginx;

    #[test]
    fn target_body_host_and_what_is_rejected() {
        let (p, diags) = parse_nginx(&[
            ("mirror-target", "http://shadow.ml.svc:8080$request_uri"),
            ("mirror-host", "shadow.internal"),
        ]);
        assert!(diags.is_empty(), "{diags:?}");
        let m = p.mirror.expect("mirror");
        assert!(m.request_body);
        assert_eq!(
            m.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"shadow.internal"[..])
        );
        assert_eq!(
            m.url("/v1/models/m:predict?x=1"),
            "http://shadow.ml.svc:8080/v1/models/m:predict?x=1"
        );
        let (p, _) = parse_nginx(&[
            ("mirror-target", "http://shadow/fixed"),
            ("mirror-request-body", "off"),
        ]);
        let m = p.mirror.expect("mirror");
        assert!(!m.request_body);
        assert_eq!(m.url("/a?b"), "http://shadow/fixed");
        for (value, want) in [
            (
                "https://shadow$request_uri",
                "https mirror targets are not supported",
            ),
            ("http://shadow$uri", "only the variable $request_uri"),
            ("/relative", "is not an absolute http:// URL"),
        ] {
            let (p, diags) = parse_nginx(&[("mirror-target", value)]);
            assert!(p.mirror.is_none());
            assert!(
                diags
                    .iter()
                    .any(|d| d.to_string().contains(
                        "metadata.annotations[nginx.ingress.kubernetes.io/mirror-target]"
                    ) && d.to_string().contains(want)),
                "{value}: {diags:?}"
            );
        }
    }
}
