//! CORS at request time: preflight answers and response headers, ingress-nginx style.
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::{
    proxy::{Body, local},
    translate::annotations::cors::CorsPolicy,
};

/// An OPTIONS request with `Access-Control-Request-Method` is answered here with 204.
pub fn preflight<B>(cors: &CorsPolicy, req: &Request<B>) -> Option<Response<Body>> {
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let mut resp = local(StatusCode::NO_CONTENT, "");
    let h = resp.headers_mut();
    decorate(cors, origin, h);
    set(h, header::ACCESS_CONTROL_ALLOW_METHODS, &cors.methods);
    set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.headers);
    set(h, header::ACCESS_CONTROL_MAX_AGE, &cors.max_age.to_string());
    h.remove(header::CONTENT_TYPE);
    Some(resp)
}

/// Adds Access-Control-Allow-Origin (and credentials / expose headers) when allowed.
pub fn decorate(cors: &CorsPolicy, origin: Option<&str>, h: &mut HeaderMap) {
    let Some(allow) = cors.allow_origin(origin) else {
        return;
    };
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow);
    if cors.credentials {
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    if !cors.expose_headers.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &cors.expose_headers,
        );
    }
    if allow != "*" {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::annotations::cors::DEFAULT_METHODS;

    fn policy(origins: &[&str], credentials: bool, expose: &str) -> CorsPolicy {
        CorsPolicy {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            methods: DEFAULT_METHODS.into(),
            headers: "X-Model,Content-Type".into(),
            expose_headers: expose.into(),
            credentials,
            max_age: 600,
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/infer");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn preflight_is_answered_only_for_options_with_a_requested_method() {
        let p = policy(&["https://app.example.com"], false, "");
        assert!(preflight(&p, &request(Method::OPTIONS, &[])).is_none());
        assert!(
            preflight(
                &p,
                &request(Method::POST, &[("access-control-request-method", "POST")])
            )
            .is_none()
        );
        let resp = preflight(
            &p,
            &request(
                Method::OPTIONS,
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "POST"),
                ],
            ),
        )
        .expect("preflight");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], DEFAULT_METHODS);
        assert_eq!(h["access-control-allow-headers"], "X-Model,Content-Type");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert!(!h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn responses_are_decorated_for_allowed_origins_only() {
        let p = policy(&["https://app.example.com"], true, "X-Request-ID");
        let mut h = HeaderMap::new();
        decorate(&p, Some("https://evil.example.com"), &mut h);
        assert!(h.is_empty(), "{h:?}");
        decorate(&p, None, &mut h);
        assert!(h.is_empty(), "{h:?}");
        decorate(&p, Some("https://app.example.com"), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "X-Request-ID");
        assert_eq!(h["vary"], "Origin");

        // "*" without credentials: a literal "*" and no Vary.
        let any = policy(&["*"], false, "");
        let mut h = HeaderMap::new();
        decorate(&any, Some("https://x.example.com"), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(!h.contains_key("vary"));
    }
}
