//! The L7 proxy: accepts HTTP/1.1 connections, routes each request on the route-table
//! snapshot current when it arrived, and forwards it to an endpoint over pooled keep-alive
//! connections, streaming bodies both ways.
pub mod forward;
pub mod framing;
pub mod headers;
pub mod listen;
pub mod passthrough;
pub mod request_id;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::{net::TcpListener, sync::watch};

use self::headers::Authority;
use crate::{
    metrics::observe::{Observer, RequestRecord},
    policy::{self, auth::AuthClient, ratelimit::RateLimiters},
    routes::{RouteStore, request_host},
    translate::annotations::access::canonical,
};

/// Errors of a body crossing the proxy (client, backend, limits, timeouts).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

/// How long connections get to finish in-flight requests after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

pub struct Proxy {
    routes: Arc<RouteStore>,
    upstreams: crate::upstream::Upstreams,
    /// Limits on client requests (header size/count/time, h2 streams).
    pub limits: listen::ServerLimits,
    /// L7 rate-limit state (outlives route-table swaps).
    pub limiters: RateLimiters,
    auth: AuthClient,
    /// Sends the copies of `mirror-target`.
    mirror: policy::mirror::MirrorClient,
    /// Called with sources the rate limiter finds abusive (the XDP penalty box).
    pub on_abuse: Option<Box<dyn Fn(std::net::IpAddr) + Send + Sync>>,
    /// Metrics and access log.
    observer: Arc<Observer>,
}

impl Proxy {
    pub fn new(routes: Arc<RouteStore>, observer: Arc<Observer>) -> Self {
        #[expect(
            clippy::expect_used,
            reason = "the aws-lc-rs provider supports the default TLS versions: cannot fail"
        )]
        let upstreams = crate::upstream::Upstreams::new().expect("upstream TLS configuration");
        Self {
            routes,
            upstreams,
            limits: listen::ServerLimits::default(),
            limiters: RateLimiters::default(),
            auth: AuthClient::default(),
            mirror: policy::mirror::MirrorClient::default(),
            on_abuse: None,
            observer,
        }
    }

    /// Serves HTTP/1.1 and h2c on `listener` until `shutdown` turns true, then drains.
    pub async fn serve_http(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) {
        listen::serve(self, listener, None, shutdown).await;
    }

    /// Routes and forwards one request, recording it when its response ends. Never fails:
    /// problems become 4xx/5xx responses.
    pub async fn handle(&self, req: Request<Incoming>, info: listen::ConnInfo) -> Response<Body> {
        let started = Instant::now();
        let mut rec = RequestRecord {
            client: Some(info.peer),
            method: req.method().clone(),
            request_path: if self.observer.logs_requests() {
                req.uri().path().to_owned()
            } else {
                String::new()
            },
            bytes_in: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            request_id: req.headers().get(&request_id::X_REQUEST_ID).cloned(),
            ..RequestRecord::default()
        };
        let resp = self.route_and_forward(req, info, &mut rec).await;
        self.observer.wrap(rec, started, resp)
    }

    async fn route_and_forward(
        &self,
        mut req: Request<Incoming>,
        info: listen::ConnInfo,
        rec: &mut RequestRecord,
    ) -> Response<Body> {
        if req.extensions().get::<framing::Smuggled>().is_some() {
            // RFC 9112 6.1: refused, and the connection closes after the response.
            let mut resp = local(
                StatusCode::BAD_REQUEST,
                "Content-Length and Transfer-Encoding in one request\n",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }
        let table = self.routes.load();
        let peer = info.peer;
        let requested = headers::requested_authority(req.uri(), req.headers());
        let raw_host = requested.and_then(Authority::to_str).unwrap_or("");
        // The record owns the host; the rest of this function borrows it from there.
        rec.host = request_host(raw_host);
        // The client's authority, kept before any rewrite (X-Forwarded-Host, upstream).
        let client_authority = requested.and_then(Authority::to_value);
        let host = rec.host.as_str();
        if !table.www_redirects.is_empty()
            && let Some(to) = table.www_redirects.get(host)
        {
            let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let location = format!("{}://{to}{pq}", info.scheme());
            return policy::redirect::redirect(308, &location);
        }
        let Some(route) = table.lookup(host, req.uri().path()) else {
            return local(StatusCode::NOT_FOUND, "no route for this host and path\n");
        };
        let conn = policy::Conn {
            client: peer,
            scheme: info.scheme(),
            host,
            host_has_tls: table.certificate_for(host).is_some(),
        };
        let must_authenticate = match policy::screen(route, &req, conn) {
            Ok(auth) => auth == policy::Auth::Required,
            Err(resp) => return resp,
        };
        let slot = match &route.policy.rate_limit {
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
                        let status = if limited.connections {
                            table.limit_status.connections
                        } else {
                            table.limit_status.rate
                        };
                        return local(status, "rate limit exceeded\n");
                    }
                }
            }
            None => None,
        };
        if let Some(basic) = &route.policy.basic_auth
            && must_authenticate
            && let Err(resp) = Box::pin(policy::basic_auth::check(basic, req.headers())).await
        {
            // (Boxed, as auth-url below: a rare branch kept out of the request future.)
            return resp;
        }
        if let Some(auth) = &route.policy.auth
            && must_authenticate
        {
            let request_uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let original = policy::auth::Original {
                method: req.method(),
                headers: req.headers(),
                url: format!("{}://{raw_host}{request_uri}", conn.scheme),
                vars: crate::translate::annotations::auth::RequestVars {
                    scheme: conn.scheme,
                    host,
                    http_host: raw_host,
                    request_uri,
                },
            };
            // Boxed: a rare branch kept out of the request future's size.
            match Box::pin(self.auth.check(auth, original)).await {
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
        rec.route = Some(canary.map_or(&route.labels, |c| &c.labels).clone());
        let backend = if backend.endpoints.is_empty() {
            route.fallback.as_ref().unwrap_or(backend)
        } else {
            backend
        };
        // custom-http-errors: what the error page Service is told, taken before the rewrite.
        let error_pages = route
            .fallback
            .as_ref()
            .filter(|_| !route.policy.custom_http_errors.is_empty())
            .map(|pages| {
                let h = req.headers();
                let context = (
                    req.uri().to_string(),
                    h.get(header::ACCEPT).cloned(),
                    h.get(&request_id::X_REQUEST_ID).cloned(),
                );
                (pages, context)
            });
        // mirror-target: the copy is of the request as the client sent it.
        let tee = route
            .policy
            .mirror
            .as_ref()
            .and_then(|m| self.mirror.start(m, route, &req, peer.ip()))
            .map(Box::new);
        policy::rewrite_request(route, &mut req);
        let upstream_started = Instant::now();
        let authorities = forward::Authorities {
            upstream: (route.policy.headers.upstream_vhost.clone())
                .or_else(|| client_authority.clone()),
            client: client_authority,
        };
        let forwarded = forward::forward(
            &self.upstreams,
            backend,
            &route.policy.upstream,
            info,
            authorities,
            req,
            tee,
        )
        .await;
        rec.upstream_connect = forwarded.connect;
        rec.upstream_addr = forwarded.endpoint;
        rec.upstream_duration = Some(upstream_started.elapsed());
        let mut resp = forwarded.response;
        let status = resp.status().as_u16();
        if let Some((pages, (uri, accept, request_id))) = error_pages
            && route.policy.custom_http_errors.contains(&status)
        {
            let what = forward::ErrorPageRequest {
                status,
                accept,
                original_uri: &uri,
                namespace: &route.labels.namespace,
                ingress: &route.labels.ingress,
                service: &backend.service,
                service_port: &backend.port,
                request_id,
                client: peer.ip(),
            };
            // (Boxed: a rare branch kept out of the request future.)
            let page = forward::error_page(&self.upstreams, pages, &route.policy.upstream, what);
            if let Some(page) = Box::pin(page).await {
                resp = page;
            }
        }
        policy::finish_response(route, origin.as_ref(), &mut resp);
        if let Some(rate) = route.policy.response_rate {
            resp = resp.map(|body| policy::throttle::Throttled::new(body, rate).boxed());
        }
        match slot {
            // limit-connections: the request is in flight until its body has been sent.
            Some(slot) => resp.map(|body| slot.hold(body).boxed()),
            None => resp,
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
