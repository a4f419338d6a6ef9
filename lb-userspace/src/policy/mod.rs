//! The annotations' behaviour at request time, in ingress-nginx's order:
//! access (source ranges) -> rate limits -> redirects -> app-root -> CORS preflight ->
//! basic auth -> external auth -> canary choice -> rewrite and request headers -> upstream ->
//! error pages (`custom-http-errors`) -> Location and cookie rewrites, CORS and response
//! headers. Each
//! step is a function of the route's immutable policy, so a request is judged entirely by
//! the route-table snapshot it started on.
pub mod auth;
pub mod basic_auth;
pub mod canary;
pub mod cookie;
pub mod cors;
pub mod htpasswd;
pub mod mirror;
pub mod ratelimit;
pub mod redirect;
pub mod throttle;

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response, StatusCode, Uri};

use crate::{
    proxy::{Body, local},
    routes::Route,
    translate::annotations::{access::canonical, rewrite},
};

/// What the request phase needs to know about the connection.
#[derive(Clone, Copy, Debug)]
pub struct Conn<'a> {
    pub client: SocketAddr,
    /// "http" or "https".
    pub scheme: &'static str,
    /// The request host (lower-case, no port).
    pub host: &'a str,
    /// Whether the host has a TLS section (ssl-redirect applies).
    pub host_has_tls: bool,
}

/// Access, redirects, app-root and CORS preflight: `Err` is the response to send instead
/// of proxying. Rate limits and auth are separate (they keep state or do I/O).
pub fn screen<B>(route: &Route, req: &Request<B>, conn: Conn<'_>) -> Result<Auth, Response<Body>> {
    let p = &route.policy;
    let ip = canonical(conn.client.ip());
    let has_auth = p.basic_auth.is_some() || p.auth.is_some();
    let auth = if p.access.satisfy_any && has_auth {
        // satisfy any: a source the allow list names is in; anyone else must authenticate.
        if p.access.names_allowed(ip) {
            Auth::Satisfied
        } else {
            Auth::Required
        }
    } else if p.access.allows(ip) {
        Auth::Required
    } else {
        return Err(local(
            StatusCode::FORBIDDEN,
            "forbidden by source address policy\n",
        ));
    };
    redirect::check(p, req, conn)?;
    if let Some(cors) = &p.cors
        && let Some(resp) = cors::preflight(cors, req)
    {
        return Err(resp);
    }
    Ok(auth)
}

/// Whether a request the source-address screen let through still has to authenticate
/// (basic auth, auth-url) when the route asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Required,
    /// `satisfy: any`, and the allow list names the source.
    Satisfied,
}

/// Rewrites the path (regex captures), and sets X-Forwarded-Prefix and the configured
/// request headers (`upstream-vhost` is the forwarder's: see `forward::Authorities`).
pub fn rewrite_request<B>(route: &Route, req: &mut Request<B>) {
    let p = &route.policy;
    if let (Some(target), Some(re)) = (&p.rewrite.target, &route.regex) {
        let path = req.uri().path();
        let mut new = rewrite::apply(target, re, path);
        if let Some(q) = req.uri().query() {
            new.push('?');
            new.push_str(q);
        }
        if let Ok(pq) = new.parse::<http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    let headers = req.headers_mut();
    if let Some(prefix) = &p.rewrite.forwarded_prefix
        && let Ok(v) = HeaderValue::from_str(prefix)
    {
        headers.insert("x-forwarded-prefix", v);
    }
    for (name, value) in &p.headers.request {
        headers.insert(name.clone(), value.clone());
    }
}

/// CORS headers and the configured response headers.
pub fn finish_response(route: &Route, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
    let p = &route.policy;
    if let Some(cors) = &p.cors {
        cors::decorate(
            cors,
            origin.and_then(|o| o.to_str().ok()),
            resp.headers_mut(),
        );
    }
    if let Some((from, to)) = &p.redirect.rewrite_location {
        redirect::rewrite_location(from, to, resp.headers_mut());
    }
    if !p.cookies.is_empty() {
        cookie::rewrite(&p.cookies, resp.headers_mut());
    }
    for (name, value) in &p.headers.response {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
}
