//! Redirect annotations at request time.
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

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
/// `proxy-redirect-from` / `-to` (nginx's `proxy_redirect FROM TO`): a `Location` that
/// starts with `from` (case-sensitive, as nginx compares) gets `to` in its place, and so does
/// the URL of a `Refresh` (`5; url=...`).
pub fn rewrite_location(from: &str, to: &str, headers: &mut HeaderMap) {
    let replaced = |v: &str| v.strip_prefix(from).map(|rest| format!("{to}{rest}"));
    if let Some(new) = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(replaced)
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(header::LOCATION, new);
    }
    let refresh = header::HeaderName::from_static("refresh");
    if let Some(new) = headers
        .get(&refresh)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let at = v.to_ascii_lowercase().find("url=")? + 4;
            replaced(&v[at..]).map(|url| format!("{}{url}", &v[..at]))
        })
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(refresh, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        rewrite_location("http://mlflow:5000/", "/mlflow/", &mut h);
        h
    }

    #[test]
    fn location_and_refresh_prefixes_are_replaced_as_nginx_does() {
        let h = rewritten(&[
            ("location", "http://mlflow:5000/#/experiments/1"),
            ("refresh", "3; URL=http://mlflow:5000/ajax"),
        ]);
        assert_eq!(h[header::LOCATION], "/mlflow/#/experiments/1");
        assert_eq!(h["refresh"], "3; URL=/mlflow/ajax");
        // Another prefix, another case: untouched (nginx compares case-sensitively).
        for other in ["https://elsewhere/", "HTTP://MLFLOW:5000/x", "/relative"] {
            let h = rewritten(&[("location", other)]);
            assert_eq!(h[header::LOCATION], other);
        }
        assert!(rewritten(&[]).is_empty());
    }
}
