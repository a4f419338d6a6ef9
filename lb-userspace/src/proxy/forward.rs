//! Forwarding one routed request: endpoint choice (balancing, hashing, affinity), the
//! upstream request in the form the backend's protocol wants, retries per
//! `proxy-next-upstream`, outlier reports, protocol upgrades (WebSocket) and the response
//! streamed back.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    request::Parts, uri::Scheme,
};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use super::{Body, headers, listen::ConnInfo, local};
use crate::{
    balance::{Backend, Outcome, Strategy, hash::hash_bytes},
    translate::annotations::upstream::{HashPart, UpstreamPolicy},
    upstream::{Failed, RequestBody, ResponseBody, Sent, Timeouts, UpstreamError, Upstreams},
};

/// What the caller needs besides the response (for logs and metrics).
pub struct Forwarded {
    pub response: Response<Body>,
    /// The endpoint that answered (or failed last).
    pub endpoint: Option<SocketAddr>,
    /// How long the last connection opened for this request took to establish (`None`:
    /// only pooled connections were used).
    pub connect: Option<Duration>,
}

impl Forwarded {
    fn local(status: StatusCode, text: &'static str) -> Self {
        Self::at(local(status, text), None, None)
    }

    fn at(
        response: Response<Body>,
        endpoint: Option<SocketAddr>,
        connect: Option<Duration>,
    ) -> Self {
        Self {
            response,
            endpoint,
            connect,
        }
    }
}

/// The authority the client asked for (see `headers::requested_authority`), for
/// X-Forwarded-Host, and the one the upstream request carries (`upstream-vhost`, else the
/// client's): its Host header over HTTP/1.1, its `:authority` over h2.
#[derive(Clone, Debug, Default)]
pub struct Authorities {
    pub client: Option<HeaderValue>,
    pub upstream: Option<HeaderValue>,
}

/// Forwards `req` to an endpoint of `backend` under `policy`; `tee` (`mirror-target`)
/// gets a copy of the request body as it goes upstream.
pub async fn forward(
    upstreams: &Upstreams,
    backend: &Arc<Backend>,
    policy: &UpstreamPolicy,
    conn: ConnInfo,
    authorities: Authorities,
    req: Request<Incoming>,
    tee: Option<Box<crate::upstream::Tee>>,
) -> Forwarded {
    if backend.endpoints.is_empty() {
        return Forwarded::local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoints for this backend\n",
        );
    }
    if let Some(limit) = policy.body_size
        && content_length(req.headers()).is_some_and(|n| n > limit)
    {
        return Forwarded::local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let timeouts = timeouts(policy);

    // Endpoint choice: a valid affinity cookie wins, then hashing, then the balancer.
    let affinity_hit = policy
        .affinity
        .as_ref()
        .and_then(|a| cookie(req.headers(), &a.name).and_then(|token| backend.by_token(token)));
    let strategy = match &policy.hash_by {
        Some(parts) => Strategy::Hash(hash_key(parts, &req, conn.peer)),
        None => policy.load_balance.into(),
    };

    if is_upgrade(&req) {
        let idx = affinity_hit.or_else(|| backend.choose(strategy, &[]));
        return match idx {
            // Boxed, as the other rare branches: the forwarding future is moved into place
            // for every request, and its size is that of its largest branch.
            Some(i) => {
                let to = Endpoint { backend, idx: i };
                Box::pin(upgrade(
                    upstreams,
                    to,
                    policy,
                    conn,
                    authorities,
                    req,
                    timeouts,
                ))
                .await
            }
            None => Forwarded::local(StatusCode::SERVICE_UNAVAILABLE, "no endpoint\n"),
        };
    }

    let (mut parts, body) = req.into_parts();
    let te_trailers = parts
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("trailers"));
    hop_headers(&mut parts, &conn, authorities.client.as_ref());
    shape_for_backend(&mut parts, policy, authorities.upstream, te_trailers);

    let n = backend.endpoints.len();
    let tries = match policy.tries {
        0 => n,
        t => (t as usize).min(n),
    }
    .max(1);
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let body = RequestBody::new(body, policy.body_size).with_tee(tee);
    let replayable = (idempotent || policy.next_upstream.non_idempotent)
        && hyper::body::Body::is_end_stream(&body);
    // Requests that can be replayed after they were sent keep a copy of their head; the
    // common single-endpoint case copies nothing.
    let template = (replayable && tries > 1).then(|| Template::of(&parts));
    let mut next = Some(Request::from_parts(parts, body));
    let deadline = policy.next_upstream_timeout.map(|d| Instant::now() + d);
    let mut tried: Vec<usize> = Vec::with_capacity(tries);
    let mut last_error: Option<UpstreamError> = None;
    let mut last_endpoint = None;
    let mut connect = None;
    // A response with a status `proxy-next-upstream` lists, kept while the next endpoint
    // is tried: it is what the client gets if no further attempt answers (as nginx passes
    // the last response on when it runs out of tries or time).
    // (Boxed: a rare case kept out of the request future's size.)
    let mut held: Option<Box<(Sent, usize)>> = None;

    for attempt in 0..tries {
        if attempt > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let idx = match (attempt, affinity_hit) {
            (0, Some(i)) => i,
            _ => match backend.choose(strategy, &tried) {
                Some(i) => i,
                None => break,
            },
        };
        tried.push(idx);
        let Some(addr) = backend.endpoints.get(idx).copied() else {
            break;
        };
        last_endpoint = Some(addr);
        let req = match next.take() {
            Some(r) => r,
            None => match &template {
                Some(t) => t.build(),
                None => break,
            },
        };
        let started = Instant::now();
        backend.start(idx);
        match upstreams.send(addr, policy.protocol, req, timeouts).await {
            Ok(sent) => {
                connect = sent.connect.or(connect);
                let status = sent.response.status().as_u16();
                let more = attempt + 1 < tries
                    && template.is_some()
                    && deadline.is_none_or(|d| Instant::now() < d);
                if more && policy.next_upstream.statuses.contains(&status) {
                    debug!(%addr, status, "retrying on another endpoint");
                    backend.report(idx, Outcome::Failure, started.elapsed());
                    held = Some(Box::new((sent, idx)));
                    continue;
                }
                backend.report(idx, Outcome::Success, started.elapsed());
                let set_cookie = affinity_cookie(policy, backend, affinity_hit, idx);
                return respond(sent, addr, set_cookie, policy, connect);
            }
            Err(Failed {
                error,
                request,
                connect: opened,
            }) => {
                connect = opened.or(connect);
                if error.body_too_large() {
                    return Forwarded::at(
                        local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
                        Some(addr),
                        connect,
                    );
                }
                let outcome = if error.is_connect() {
                    Outcome::ConnectFailure
                } else {
                    Outcome::Failure
                };
                backend.report(idx, outcome, started.elapsed());
                warn!(%addr, %backend, attempt, error = %error, "upstream attempt failed");
                let allowed = if error.is_timeout() {
                    policy.next_upstream.on_timeout
                } else {
                    policy.next_upstream.on_error
                };
                // A request handed back unsent may go anywhere; a sent one only when
                // replayable.
                next = request;
                last_error = Some(error);
                if !allowed || (next.is_none() && template.is_none()) {
                    break;
                }
            }
        }
    }
    if let Some((sent, idx)) = held.map(|h| *h)
        && let Some(addr) = backend.endpoints.get(idx).copied()
    {
        let set_cookie = affinity_cookie(policy, backend, affinity_hit, idx);
        return respond(sent, addr, set_cookie, policy, connect);
    }
    let response = match &last_error {
        Some(e) if e.is_timeout() => local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        _ => local(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
    };
    Forwarded::at(response, last_endpoint, connect)
}

/// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout` of an Ingress.
fn timeouts(policy: &UpstreamPolicy) -> Timeouts {
    Timeouts {
        connect: policy.connect_timeout,
        send: policy.send_timeout,
        read: policy.read_timeout,
    }
}

/// The `Set-Cookie` of cookie affinity for endpoint `idx`, when the request had no valid
/// affinity cookie.
fn affinity_cookie(
    policy: &UpstreamPolicy,
    backend: &Backend,
    affinity_hit: Option<usize>,
    idx: usize,
) -> Option<HeaderValue> {
    let (Some(a), None) = (&policy.affinity, affinity_hit) else {
        return None;
    };
    let token = backend.token(idx)?;
    let mut c = format!("{}={token}; Path={}; HttpOnly", a.name, a.path);
    if let Some(age) = a.max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).ok()
}

/// What `custom-http-errors` tells the error-page Service about the failed request (the
/// headers ingress-nginx sets).
pub struct ErrorPageRequest<'a> {
    pub status: u16,
    /// The client's `Accept` (sent as X-Format).
    pub accept: Option<HeaderValue>,
    pub original_uri: &'a str,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub service_port: &'a str,
    pub request_id: Option<HeaderValue>,
    pub client: std::net::IpAddr,
}

/// `custom-http-errors`: the page for a backend's error status, from the Ingress's
/// `default-backend` Service, asked as ingress-nginx asks it: `GET /` with X-Code,
/// X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port,
/// X-Request-ID. Its answer goes to the client as it is; `None` (no endpoint, or the
/// Service failed): the backend's own response stays.
pub async fn error_page(
    upstreams: &Upstreams,
    pages: &Backend,
    policy: &UpstreamPolicy,
    what: ErrorPageRequest<'_>,
) -> Option<Response<Body>> {
    let addr = pages.pick()?;
    let mut req = Request::get("/").body(RequestBody::empty()).ok()?;
    let h = req.headers_mut();
    let text = |v: &str| HeaderValue::from_str(v).ok();
    let pairs = [
        ("x-code", text(&what.status.to_string())),
        ("x-format", what.accept),
        ("x-original-uri", text(what.original_uri)),
        ("x-namespace", text(what.namespace)),
        ("x-ingress-name", text(what.ingress)),
        ("x-service-name", text(what.service)),
        ("x-service-port", text(what.service_port)),
        ("x-request-id", what.request_id),
        ("x-forwarded-for", text(&what.client.to_string())),
        (
            "host",
            text(&format!("{}.{}", pages.service, pages.namespace)),
        ),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            h.insert(name, v);
        }
    }
    let timeouts = timeouts(policy);
    let protocol = crate::translate::annotations::upstream::BackendProtocol::Http;
    match upstreams.send(addr, protocol, req, timeouts).await {
        Ok(sent) => Some(respond(sent, addr, None, policy, None).response),
        Err(Failed { error, .. }) => {
            warn!(%addr, error = %error, "custom-http-errors: the error page Service failed");
            None
        }
    }
}

/// The backend's response on its way to the client: hop-by-hop headers removed, the
/// affinity cookie added, the body streamed with the read timeout.
fn respond(
    sent: Sent,
    addr: SocketAddr,
    set_cookie: Option<HeaderValue>,
    policy: &UpstreamPolicy,
    connect: Option<Duration>,
) -> Forwarded {
    let (mut rparts, rbody) = sent.response.into_parts();
    headers::strip_hop_by_hop(&mut rparts.headers);
    if let Some(c) = set_cookie {
        rparts.headers.append(header::SET_COOKIE, c);
    }
    let body = ResponseBody::new(rbody, sent.lease, policy.read_timeout)
        .map_err(Into::into)
        .boxed();
    Forwarded::at(Response::from_parts(rparts, body), Some(addr), connect)
}

/// The request head again, for a retry after the first copy was sent.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn build(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Removes hop-by-hop headers and sets the X-Forwarded-* ones for this hop.
fn hop_headers(parts: &mut Parts, conn: &ConnInfo, client_authority: Option<&HeaderValue>) {
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::set_forwarded(
        &mut parts.headers,
        conn.peer,
        conn.scheme(),
        client_authority,
        conn.local_port,
    );
}

/// HTTP/1.1 backends get an origin-form target and `authority` as Host; h2 backends an
/// absolute URI (:scheme, `authority` as :authority) and `te: trailers` when the client
/// sent it (gRPC).
fn shape_for_backend(
    parts: &mut Parts,
    policy: &UpstreamPolicy,
    authority: Option<HeaderValue>,
    te_trailers: bool,
) {
    let proto = policy.protocol;
    if proto.is_h2() {
        parts.version = Version::HTTP_2;
        let scheme = if proto.is_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(scheme);
        if let Some(a) = authority
            .as_ref()
            .and_then(|a| http::uri::Authority::try_from(a.as_bytes()).ok())
        {
            uri.authority = Some(a);
        }
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.headers.remove(header::HOST);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
    } else {
        parts.version = Version::HTTP_11;
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let pq = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            parts.uri = Uri::from(pq);
        }
        if let Some(a) = authority {
            parts.headers.insert(header::HOST, a);
        }
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The value of cookie `name` in the Cookie header(s).
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The consistent-hash key of a request.
fn hash_key(parts: &[HashPart], req: &Request<Incoming>, peer: SocketAddr) -> u64 {
    let mut key = Vec::with_capacity(64);
    for p in parts {
        match p {
            HashPart::Literal(s) => key.extend_from_slice(s.as_bytes()),
            HashPart::RemoteAddr => key.extend_from_slice(peer.ip().to_string().as_bytes()),
            HashPart::RequestUri => key.extend_from_slice(
                req.uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .as_bytes(),
            ),
            HashPart::Host => {
                if let Some(a) = headers::requested_authority(req.uri(), req.headers()) {
                    key.extend_from_slice(a.as_bytes());
                }
            }
            HashPart::Header(name) => {
                if let Some(v) = req.headers().get(name) {
                    key.extend_from_slice(v.as_bytes());
                }
            }
            HashPart::Cookie(name) => {
                if let Some(v) = cookie(req.headers(), name) {
                    key.extend_from_slice(v.as_bytes());
                }
            }
            HashPart::Arg(name) => {
                let value = req.uri().query().and_then(|q| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v)
                });
                if let Some(v) = value {
                    key.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
    hash_bytes(&key)
}

/// An HTTP/1.1 `Connection: upgrade` request with an `Upgrade` header.
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Where an upgrade goes: endpoint `idx` of `backend`.
struct Endpoint<'a> {
    backend: &'a Arc<Backend>,
    idx: usize,
}

/// Passes an upgrade (WebSocket) through: the backend's 101 goes to the client, then bytes
/// are copied both ways until either side closes.
async fn upgrade(
    upstreams: &Upstreams,
    to: Endpoint<'_>,
    policy: &UpstreamPolicy,
    conn: ConnInfo,
    authorities: Authorities,
    mut req: Request<Incoming>,
    timeouts: Timeouts,
) -> Forwarded {
    let Endpoint { backend, idx } = to;
    let Some(addr) = backend.endpoints.get(idx).copied() else {
        return Forwarded::local(StatusCode::SERVICE_UNAVAILABLE, "no endpoint\n");
    };
    let client_side = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    hop_headers(&mut parts, &conn, authorities.client.as_ref());
    if let Some(u) = upgrade_to.clone() {
        parts.headers.insert(header::UPGRADE, u);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut h1_policy = policy.clone();
    if h1_policy.protocol.is_h2() {
        // Upgrades are HTTP/1.1: talk HTTP/1.1 to the same endpoint (TLS kept).
        h1_policy.protocol = if h1_policy.protocol.is_tls() {
            crate::translate::annotations::upstream::BackendProtocol::Https
        } else {
            crate::translate::annotations::upstream::BackendProtocol::Http
        };
    }
    shape_for_backend(&mut parts, &h1_policy, authorities.upstream, false);
    let req = Request::from_parts(parts, RequestBody::new(body, policy.body_size));
    let started = Instant::now();
    backend.start(idx);
    let (mut resp, connect) = match upstreams
        .send_upgrade(addr, h1_policy.protocol, req, timeouts)
        .await
    {
        Ok(sent) => (sent.response, sent.connect),
        Err(Failed { error, connect, .. }) => {
            let outcome = if error.is_connect() {
                Outcome::ConnectFailure
            } else {
                Outcome::Failure
            };
            backend.report(idx, outcome, started.elapsed());
            warn!(%addr, error = %error, "upgrade request failed");
            return Forwarded::at(
                local(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
                Some(addr),
                connect,
            );
        }
    };
    backend.report(idx, Outcome::Success, started.elapsed());
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers);
        let body = ResponseBody::new(rbody, None, policy.read_timeout)
            .map_err(Into::into)
            .boxed();
        return Forwarded::at(Response::from_parts(rparts, body), Some(addr), connect);
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_side, upstream_side) {
            Ok((c, u)) => {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    debug!(%addr, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => debug!(%addr, error = %e, "upgrade did not complete"),
        }
    });
    // The 101 as the backend sent it (its Upgrade/Connection headers included).
    let (rparts, _) = resp.into_parts();
    let empty = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed();
    Forwarded::at(Response::from_parts(rparts, empty), Some(addr), connect)
}
