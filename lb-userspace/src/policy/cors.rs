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
