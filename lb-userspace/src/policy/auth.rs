//! External authentication (`auth-url`): a subrequest with the original method, URI and
//! headers; 2xx forwards (copying `auth-response-headers`), 401/403 go back to the client
//! (401 becomes a redirect to `auth-signin?rd=<original URL>` when set), anything else —
//! including a timeout or an unreachable auth service — is a 500: never an open door.
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::warn;

use super::redirect::redirect;
use crate::{
    proxy::{Body, local},
    translate::annotations::auth::AuthPolicy,
};

/// How long the auth service has to answer.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AuthClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for AuthClient {
    fn default() -> Self {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        c.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(c),
        }
    }
}

/// The original request as the auth service sees it.
pub struct Original<'a> {
    pub method: &'a http::Method,
    pub headers: &'a HeaderMap,
    /// scheme://host/path?query as the client asked.
    pub url: String,
}

impl AuthClient {
    /// `Ok(headers to add upstream)` or `Err(response for the client)`.
    pub async fn check(
        &self,
        policy: &AuthPolicy,
        original: Original<'_>,
    ) -> Result<Vec<(header::HeaderName, HeaderValue)>, Response<Body>> {
        let mut req = Request::builder()
            .method(policy.method.clone())
            .uri(policy.url.clone());
        if let Some(h) = req.headers_mut() {
            for (name, value) in original.headers {
                if name != header::HOST
                    && name != header::CONTENT_LENGTH
                    && name != header::TRANSFER_ENCODING
                {
                    h.append(name.clone(), value.clone());
                }
            }
            if let Ok(v) = HeaderValue::from_str(&original.url) {
                h.insert("x-original-url", v);
            }
            if let Ok(v) = HeaderValue::from_str(original.method.as_str()) {
                h.insert("x-original-method", v);
            }
            for (name, value) in &policy.proxy_set_headers {
                h.insert(name.clone(), value.clone());
            }
        }
        let Ok(req) = req.body(Empty::new()) else {
            return Err(local(
                StatusCode::INTERNAL_SERVER_ERROR,
                "auth request could not be built\n",
            ));
        };
        let resp = match tokio::time::timeout(AUTH_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!(url = %policy.url, error = %e, "auth-url unreachable: refusing");
                return Err(local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication service unavailable\n",
                ));
            }
            Err(_) => {
                warn!(url = %policy.url, "auth-url timed out: refusing");
                return Err(local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication service timed out\n",
                ));
            }
        };
        let status = resp.status();
        if status.is_success() {
            let copied = policy
                .response_headers
                .iter()
                .filter_map(|n| resp.headers().get(n).map(|v| (n.clone(), v.clone())))
                .collect();
            return Ok(copied);
        }
        match status {
            StatusCode::UNAUTHORIZED => Err(match &policy.signin {
                Some(signin) => {
                    let sep = if signin.contains('?') { '&' } else { '?' };
                    redirect(302, &format!("{signin}{sep}rd={}", encode(&original.url)))
                }
                None => local(StatusCode::UNAUTHORIZED, "unauthorized\n"),
            }),
            StatusCode::FORBIDDEN => Err(local(StatusCode::FORBIDDEN, "forbidden\n")),
            other => {
                warn!(url = %policy.url, status = %other, "auth-url answered neither 2xx, 401 nor 403: refusing");
                Err(local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication failed\n",
                ))
            }
        }
    }
}

/// Percent-encodes a URL for use as a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rd_is_encoded() {
        assert_eq!(
            super::encode("http://a/b?c=d e"),
            "http%3A%2F%2Fa%2Fb%3Fc%3Dd%20e"
        );
    }
}
