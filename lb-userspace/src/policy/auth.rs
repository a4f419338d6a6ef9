//! External authentication (`auth-url`): a subrequest with the original method, URI and
//! headers; 2xx forwards (copying `auth-response-headers`), 401/403 go back to the client
//! (401 becomes a redirect to `auth-signin?rd=<original URL>` when set), anything else —
//! including a timeout or an unreachable auth service — is a 500: never an open door.
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::warn;

use super::redirect::redirect;
use crate::{
    proxy::{Body, local},
    translate::annotations::auth::{AuthPolicy, RequestVars, escape, render},
};

/// How long the auth service has to answer.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AuthClient {
    /// `http://` auth services (pooled connections).
    client: Client<HttpConnector, Empty<Bytes>>,
    /// `https://` ones: a connection per check, as nginx's `auth_request` to an https URL
    /// makes; the certificate is not checked against a CA, as for HTTPS backends.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Default for AuthClient {
    fn default() -> Self {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        c.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(c),
            tls: crate::tls::upstream::UpstreamTls::new()
                .ok()
                .map(|t| tokio_rustls::TlsConnector::from(t.http1)),
        }
    }
}

/// The original request as the auth service sees it.
pub struct Original<'a> {
    pub method: &'a http::Method,
    pub headers: &'a HeaderMap,
    /// scheme://host/path?query as the client asked.
    pub url: String,
    /// What `auth-url` and `auth-signin` may refer to.
    pub vars: RequestVars<'a>,
}

impl AuthClient {
    /// `Ok(headers to add upstream)` or `Err(response for the client)`.
    pub async fn check(
        &self,
        policy: &AuthPolicy,
        original: Original<'_>,
    ) -> Result<Vec<(header::HeaderName, HeaderValue)>, Response<Body>> {
        let Some(url) = render(&policy.url, &original.vars)
            .ok()
            .and_then(|u| u.parse::<Uri>().ok())
        else {
            warn!(url = %policy.url, "auth-url is not a URL for this request: refusing");
            return Err(local(
                StatusCode::INTERNAL_SERVER_ERROR,
                "auth request could not be built\n",
            ));
        };
        let mut req = Request::builder()
            .method(policy.method.clone())
            .uri(url.clone());
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
        let sent = async {
            if url.scheme_str() == Some("https") {
                self.send_tls(req).await
            } else {
                self.client.request(req).await.map_err(|e| e.to_string())
            }
        };
        let resp = match tokio::time::timeout(AUTH_TIMEOUT, sent).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!(%url, error = %e, "auth-url unreachable: refusing");
                return Err(local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication service unavailable\n",
                ));
            }
            Err(_) => {
                warn!(%url, "auth-url timed out: refusing");
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
                    let signin = render(signin, &original.vars).unwrap_or_default();
                    if signin.contains("rd=") {
                        redirect(302, &signin)
                    } else {
                        let sep = if signin.contains('?') { '&' } else { '?' };
                        redirect(302, &format!("{signin}{sep}rd={}", escape(&original.url)))
                    }
                }
                None => local(StatusCode::UNAUTHORIZED, "unauthorized\n"),
            }),
            StatusCode::FORBIDDEN => Err(local(StatusCode::FORBIDDEN, "forbidden\n")),
            other => {
                warn!(%url, status = %other, "auth-url answered neither 2xx, 401 nor 403: refusing");
                Err(local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authentication failed\n",
                ))
            }
        }
    }
}

impl AuthClient {
    /// One check over a new TLS connection (SNI: the URL's host).
    async fn send_tls(
        &self,
        mut req: Request<Empty<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let tls = self.tls.as_ref().ok_or("no TLS client configuration")?;
        let authority = req.uri().authority().cloned().ok_or("no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("server name {host:?}: {e}"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        // Origin form on the wire, the authority in Host.
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = pq.parse().map_err(|e| format!("{e}"))?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        req.headers_mut().insert(header::HOST, host_header);
        send.send_request(req).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use http::Uri;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A request head read from `s`, lower case.
    async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the head");
            head.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

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
            let head = read_head(&mut s).await;
            s.write_all(answer.as_bytes()).await.expect("write");
            head
        });
        (url, seen)
    }

    fn policy(url: Uri) -> AuthPolicy {
        AuthPolicy {
            url: url.to_string(),
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
            vars: VARS,
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
            vars: VARS,
        };
        let Err(resp) = AuthClient::default().check(&policy(url), original).await else {
            panic!("a 302 from the auth service let the request through");
        };
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    const VARS: RequestVars<'static> = RequestVars {
        scheme: "https",
        host: "models.example",
        http_host: "models.example",
        request_uri: "/v2/infer?x=1",
    };

    #[test]
    fn rd_is_encoded() {
        assert_eq!(escape("http://a/b?c=d e"), "http%3A%2F%2Fa%2Fb%3Fc%3Dd%20e");
    }

    /// oauth2-proxy's pattern: `auth-url: https://$host/oauth2/auth` (here with the test
    /// server's port) over TLS, and `auth-signin` with its own `rd=$escaped_request_uri`.
    #[tokio::test]
    async fn https_auth_url_with_variables_and_a_signin_with_its_own_rd() {
        use std::sync::Arc;

        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let (_, cert_pem, key_pem) = crate::tls::self_signed(&["localhost"]).expect("cert");
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in ["HTTP/1.1 200 OK\r\n", "HTTP/1.1 401 Unauthorized\r\n"] {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut s = acceptor.accept(tcp).await.expect("tls");
                heads.push(read_head(&mut s).await);
                let reply = format!("{answer}content-length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.expect("write");
            }
            heads
        });
        let mut p = policy("http://placeholder/".parse().expect("uri"));
        p.url = format!("https://$host:{port}/oauth2/auth?u=$escaped_request_uri");
        p.method = http::Method::GET;
        p.signin = Some("https://$host/oauth2/start?rd=$escaped_request_uri".into());
        let headers = HeaderMap::new();
        let vars = RequestVars {
            scheme: "https",
            host: "localhost",
            http_host: "localhost",
            request_uri: "/ui/?tab=runs",
        };
        let original = || Original {
            method: &http::Method::GET,
            headers: &headers,
            url: "https://localhost/ui/?tab=runs".into(),
            vars,
        };
        let client = AuthClient::default();
        assert!(client.check(&p, original()).await.is_ok(), "200 over TLS");
        let Err(resp) = client.check(&p, original()).await else {
            panic!("a 401 let the request through");
        };
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(
            resp.headers()[header::LOCATION],
            "https://localhost/oauth2/start?rd=%2Fui%2F%3Ftab%3Druns",
            "the signin's own rd, no second one"
        );
        let heads = server.await.expect("server");
        assert!(
            heads[0].starts_with("get /oauth2/auth?u=%2fui%2f%3ftab%3druns http/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].contains(&format!("host: localhost:{port}\r\n")),
            "{heads:?}"
        );
    }
}
