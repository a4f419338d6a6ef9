//! The L7 proxy: accepts HTTP/1.1 connections, routes each request on the route-table
//! snapshot current when it arrived, and forwards it to an endpoint over pooled keep-alive
//! connections, streaming bodies both ways.
pub mod headers;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, warn};

use crate::{
    metrics::observe::{Observer, RequestRecord, RouteInfo},
    policy::{self, auth::AuthClient, ratelimit::RateLimiters},
    routes::{RouteStore, request_host},
    translate::annotations::access::canonical,
};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long connections get to finish in-flight requests after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

pub struct Proxy {
    routes: Arc<RouteStore>,
    client: Client<HttpConnector, Incoming>,
    /// L7 rate-limit state (outlives route-table swaps).
    pub limiters: RateLimiters,
    auth: AuthClient,
    /// Called with sources the rate limiter finds abusive (the XDP penalty box).
    pub on_abuse: Option<Box<dyn Fn(std::net::IpAddr) + Send + Sync>>,
    /// Metrics and access log.
    observer: Arc<Observer>,
}

impl Proxy {
    pub fn new(routes: Arc<RouteStore>, observer: Arc<Observer>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            routes,
            client,
            limiters: RateLimiters::default(),
            auth: AuthClient::default(),
            on_abuse: None,
            observer,
        }
    }

    /// Serves plain HTTP on `listener` until `shutdown` turns true, then drains.
    pub async fn serve_http(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(80);
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections we have.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer, local_port).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(%peer, error = %e, "connection ended with error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("drain deadline passed with connections still open");
        }
    }

    /// Routes and forwards one request, recording it when its response ends. Never fails:
    /// problems become 4xx/5xx responses.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        port: u16,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut rec = RequestRecord {
            client: Some(peer),
            method: req.method().as_str().to_owned(),
            request_path: req.uri().path().to_owned(),
            bytes_in: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            ..RequestRecord::default()
        };
        let resp = self.route_and_forward(req, peer, port, &mut rec).await;
        self.observer.wrap(rec, started, resp)
    }

    async fn route_and_forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        port: u16,
        rec: &mut RequestRecord,
    ) -> Response<Body> {
        let table = self.routes.load();
        let raw_host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_owned();
        let raw_host = raw_host.as_str();
        let host = request_host(raw_host);
        rec.host.clone_from(&host);
        let Some(route) = table.lookup(&host, req.uri().path()) else {
            return local(StatusCode::NOT_FOUND, "no route for this host and path\n");
        };
        let conn = policy::Conn {
            client: peer,
            scheme: "http",
            host: &host,
            host_has_tls: table.tls.lookup(&host).is_some(),
        };
        if let Err(resp) = policy::screen(route, &req, conn) {
            return resp;
        }
        let _slot = match &route.policy.rate_limit {
            Some(limit) => {
                let ip = canonical(peer.ip());
                match self
                    .limiters
                    .admit(&route.ingress, limit, ip, Instant::now())
                {
                    Ok(slot) => slot,
                    Err(limited) => {
                        if limited.abusive
                            && let Some(report) = &self.on_abuse
                        {
                            report(ip);
                        }
                        return local(StatusCode::SERVICE_UNAVAILABLE, "rate limit exceeded\n");
                    }
                }
            }
            None => None,
        };
        if let Some(auth) = &route.policy.auth {
            let original = policy::auth::Original {
                method: req.method(),
                headers: req.headers(),
                url: format!(
                    "{}://{raw_host}{}",
                    conn.scheme,
                    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
                ),
            };
            match self.auth.check(auth, original).await {
                Ok(extra) => {
                    for (name, value) in extra {
                        req.headers_mut().insert(name, value);
                    }
                }
                Err(resp) => return resp,
            }
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        let (backend, canary) = policy::canary::choose(route, req.headers());
        rec.route = Some(RouteInfo {
            path: route.path.clone(),
            namespace: route.ingress.namespace.clone(),
            ingress: route.ingress.name.clone(),
            service: backend.service.clone(),
            canary: canary.is_some(),
        });
        let endpoint = match backend
            .pick()
            .or_else(|| route.fallback.as_ref().and_then(|f| f.pick()))
        {
            Some(e) => e,
            None => {
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no ready endpoints for this backend\n",
                );
            }
        };
        policy::rewrite_request(route, &mut req);
        let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let Ok(uri) = Uri::try_from(format!("http://{endpoint}{path_and_query}")) else {
            return local(StatusCode::BAD_REQUEST, "invalid request target\n");
        };
        let host_for_header = raw_host.to_owned();
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers);
        headers::set_forwarded(headers, peer, "http", &host_for_header, port);

        rec.upstream_addr = Some(endpoint);
        let upstream_started = Instant::now();
        let result = self.client.request(req).await;
        rec.upstream_duration = Some(upstream_started.elapsed());
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                let mut resp = Response::from_parts(parts, body.boxed());
                policy::finish_response(route, origin.as_ref(), &mut resp);
                resp
            }
            Err(e) => {
                warn!(%endpoint, %backend, error = %e, "upstream request failed");
                local(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
            }
        }
    }
}

/// A response the proxy produces itself.
pub fn local(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
