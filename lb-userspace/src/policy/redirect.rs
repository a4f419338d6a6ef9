//! Redirect annotations at request time.
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::Conn;
use crate::{
    proxy::{Body, local},
    translate::annotations::IngressPolicy,
};

pub fn check<B>(p: &IngressPolicy, req: &Request<B>, conn: Conn<'_>) -> Result<(), Response<Body>> {
    if let Some((code, to)) = &p.redirect.to {
        return Err(redirect(*code, to));
    }
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if conn.scheme == "http"
        && (p.redirect.force_ssl_redirect || (p.redirect.ssl_redirect && conn.host_has_tls))
    {
        // 308 keeps the method and body (ingress-nginx's default ssl-redirect code).
        return Err(redirect(308, &format!("https://{}{pq}", conn.host)));
    }
    if let Some(root) = &p.rewrite.app_root
        && req.uri().path() == "/"
    {
        return Err(redirect(302, root));
    }
    Ok(())
}

/// A redirect response; an invalid location becomes a 500 rather than a panic.
pub fn redirect(code: u16, location: &str) -> Response<Body> {
    let (Ok(status), Ok(loc)) = (StatusCode::from_u16(code), HeaderValue::from_str(location))
    else {
        return local(StatusCode::INTERNAL_SERVER_ERROR, "invalid redirect\n");
    };
    let mut resp = local(status, "");
    resp.headers_mut().insert(header::LOCATION, loc);
    resp
}
