//! `mirror-target` at request time: a copy of each request of the Ingress is sent to the
//! mirror (a shadow deployment) and its answer thrown away. The client's request never
//! waits for the mirror: the copy's head is taken before the request goes upstream, its
//! body (`mirror-request-body`, default on) is copied frame by frame as the real request
//! body passes upstream (`upstream::Tee`) and the copy is sent once that body has ended.
//!
//! Bounds: at most [`MAX_INFLIGHT`] copies at a time per process (more are dropped and
//! counted), a copied body of at most `proxy-body-size` (or [`MAX_BODY`] when that is
//! unlimited; a larger one is not mirrored), and the Ingress's `proxy-connect-timeout` +
//! `proxy-read-timeout` for the whole exchange. Copies of routes to HTTP/2 backends (gRPC,
//! H2C) go over h2c, the rest over HTTP/1.1. Outcomes are counted in
//! `ebpf_lb_mirror_requests{namespace, ingress, outcome}`.
use std::{net::IpAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;

use crate::{
    metrics::count_mirror, routes::Route, translate::annotations::mirror::MirrorPolicy,
    upstream::Tee,
};

/// Copies in flight at once, per process.
pub const MAX_INFLIGHT: usize = 1024;

/// The largest body copied when `proxy-body-size` is unlimited.
pub const MAX_BODY: usize = 8 << 20;

pub struct MirrorClient {
    /// HTTP/1.1, for routes to HTTP backends.
    h1: Client<HttpConnector, Full<Bytes>>,
    /// HTTP/2 with prior knowledge (h2c), for routes whose backend speaks HTTP/2 (gRPC,
    /// H2C): a gRPC server would refuse the copy over HTTP/1.1.
    h2: Client<HttpConnector, Full<Bytes>>,
    inflight: Arc<Semaphore>,
}

impl Default for MirrorClient {
    fn default() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Self {
            h1: Client::builder(TokioExecutor::new()).build(c.clone()),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(c),
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
        }
    }
}

impl MirrorClient {
    /// Starts the copy of `req` (before it goes upstream, as the client sent it). Returns
    /// the tee to attach to the request's body when the copy waits for that body.
    pub fn start(
        &self,
        m: &MirrorPolicy,
        route: &Route,
        req: &Request<Incoming>,
        client: IpAddr,
    ) -> Option<Tee> {
        let count = |outcome| count_mirror(&route.ingress, outcome);
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            count("dropped");
            return None;
        };
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let Ok(uri) = m.url(pq).parse::<Uri>() else {
            count("invalid_url");
            return None;
        };
        let mut copy = Request::builder()
            .method(req.method().clone())
            .uri(uri.clone());
        if let Some(headers) = copy.headers_mut() {
            // The client's headers, less the hop-by-hop ones (as every proxied request),
            // Proxy-Authorization, and the Host and framing the copy gets anew.
            *headers = req.headers().clone();
            crate::proxy::headers::strip_hop_by_hop(headers);
            for name in [
                header::HOST,
                header::CONTENT_LENGTH,
                header::PROXY_AUTHORIZATION,
            ] {
                headers.remove(name);
            }
            let host = m.host.clone().or_else(|| {
                uri.authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            if let Some(host) = host {
                headers.insert(header::HOST, host);
            }
            if let Ok(ip) = HeaderValue::from_str(&client.to_string()) {
                headers.insert("x-forwarded-for", ip);
            }
        }
        let (tee, body) = if m.request_body && !req.body().is_end_stream() {
            let upstream = &route.policy.upstream;
            let cap = upstream
                .body_size
                .map_or(MAX_BODY, |b| usize::try_from(b).unwrap_or(MAX_BODY));
            let (tee, rx) = Tee::new(cap);
            (Some(tee), Some(rx))
        } else {
            (None, None)
        };
        let budget = route.policy.upstream.connect_timeout + route.policy.upstream.read_timeout;
        let client = if route.policy.upstream.protocol.is_h2() {
            self.h2.clone()
        } else {
            self.h1.clone()
        };
        let ingress = route.ingress.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = tokio::time::timeout(budget, async move {
                let body = match body {
                    Some(rx) => match rx.await {
                        Ok(b) => b,
                        Err(_) => return "body_not_copied",
                    },
                    None => Bytes::new(),
                };
                let Ok(req) = copy.body(Full::new(body)) else {
                    return "invalid_request";
                };
                match client.request(req).await {
                    // Read to the end, so the connection can serve the next copy.
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        "sent"
                    }
                    Err(_) => "failed",
                }
            })
            .await
            .unwrap_or("timeout");
            count_mirror(&ingress, outcome);
        });
        tee
    }
}
