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
    use http::Uri;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A one-request auth service: answers `answer` and hands back the request head.
    async fn auth_service(answer: &'static str) -> (Uri, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url: Uri = format!("http://{}/check", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before the head");
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&head).to_lowercase()
        });
        (url, seen)
    }

    fn policy(url: Uri) -> AuthPolicy {
        AuthPolicy {
            url,
            method: http::Method::POST,
            signin: None,
            response_headers: vec![header::HeaderName::from_static("x-auth-user")],
            proxy_set_headers_configmap: Some("ml/auth-headers".into()),
            proxy_set_headers: vec![(
                header::HeaderName::from_static("x-tenant"),
                HeaderValue::from_static("mlops"),
            )],
        }
    }

    #[tokio::test]
    async fn the_subrequest_carries_auth_method_original_and_configured_headers() {
        let (url, seen) = auth_service(
            "HTTP/1.1 200 OK\r\nx-auth-user: alice\r\nx-other: no\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("models.example"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let original = Original {
            method: &http::Method::PUT,
            headers: &headers,
            url: "https://models.example/v2/infer?x=1".into(),
        };
        let copied = AuthClient::default()
            .check(&policy(url), original)
            .await
            .expect("allowed");
        assert_eq!(
            copied,
            vec![(
                header::HeaderName::from_static("x-auth-user"),
                HeaderValue::from_static("alice")
            )]
        );
        let head = seen.await.expect("auth service");
        // auth-method, not the client's method; the client's headers but not its Host or
        // body framing; the original URL and method; auth-proxy-set-headers.
        assert!(head.starts_with("post /check http/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: bearer t\r\n"), "{head}");
        assert!(!head.contains("host: models.example"), "{head}");
        assert!(!head.contains("content-length: 12"), "{head}");
        assert!(
            head.contains("x-original-url: https://models.example/v2/infer?x=1\r\n"),
            "{head}"
        );
        assert!(head.contains("x-original-method: put\r\n"), "{head}");
        assert!(head.contains("x-tenant: mlops\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_unexpected_auth_status_refuses_with_500() {
        let (url, _seen) =
            auth_service("HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n").await;
        let headers = HeaderMap::new();
        let original = Original {
            method: &http::Method::GET,
            headers: &headers,
            url: "http://a/".into(),
        };
        let Err(resp) = AuthClient::default().check(&policy(url), original).await else {
            panic!("a 302 from the auth service let the request through");
        };
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn rd_is_encoded() {
        assert_eq!(encode("http://a/b?c=d e"), "http%3A%2F%2Fa%2Fb%3Fc%3Dd%20e");
    }
}
