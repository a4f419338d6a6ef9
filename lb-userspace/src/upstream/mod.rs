//! Connections to backends: HTTP/1.1, h2 and h2c, over TCP or TLS (`backend-protocol`),
//! kept in per-thread pools so that the hot path takes no lock (each proxy worker thread
//! runs its own runtime; see `proxy::listen`).
mod body;
mod connect;
mod error;
mod pool;
mod send_timeout;

use std::{net::SocketAddr, time::Duration};

use http::Request;
use hyper::{Response, body::Incoming};

pub use body::{BodyError, RequestBody, ResponseBody};
pub use error::UpstreamError;
pub use pool::Lease;
use send_timeout::SendTimeout;

use crate::{tls::upstream::UpstreamTls, translate::annotations::upstream::BackendProtocol};

/// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

/// What sending a request upstream gave back.
pub struct Sent {
    pub response: Response<Incoming>,
    /// The HTTP/1.1 connection, to return to the pool when the response body ends.
    pub lease: Option<Lease>,
}

/// A failed attempt; `request` is the request when it was never written (so it can go to
/// another endpoint as it is, body included).
pub struct Failed {
    pub error: UpstreamError,
    pub request: Option<Request<RequestBody>>,
}

/// The upstream side of the proxy: TLS settings and the per-thread pools.
#[derive(Debug)]
pub struct Upstreams {
    tls: UpstreamTls,
}

impl Upstreams {
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            tls: UpstreamTls::new()?,
        })
    }

    /// Sends `req` (origin-form URI and Host header for HTTP/1.1, absolute URI for h2) to
    /// `addr` and waits up to `t.read` for the response head.
    pub async fn send(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        if proto.is_h2() {
            self.send_h2(addr, proto, req, t).await
        } else {
            self.send_h1(addr, proto, req, t).await
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        mut req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        // Idle pooled connections first: one the backend closed meanwhile hands the request
        // back unsent, and the next one (or a new connection) gets it.
        while let Some(mut lease) = pool::checkout_h1(addr, proto) {
            if lease.sender.ready().await.is_err() {
                continue;
            }
            lease.send_timeout.set(t.send);
            match self.exchange_h1(lease, req, t).await {
                Ok(sent) => return Ok(sent),
                Err(Failed {
                    request: Some(r), ..
                }) => req = r,
                Err(f) => return Err(f),
            }
        }
        let send_timeout = SendTimeout::new(t.send);
        let sender =
            match connect::h1(&self.tls, addr, proto, t.connect, send_timeout.clone()).await {
                Ok(s) => s,
                Err(error) => {
                    return Err(Failed {
                        error,
                        request: Some(req),
                    });
                }
            };
        self.exchange_h1(Lease::new(addr, proto, sender, send_timeout), req, t)
            .await
    }

    async fn exchange_h1(
        &self,
        mut lease: Lease,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        let fut = lease.sender.try_send_request(req);
        match tokio::time::timeout(t.read, fut).await {
            Ok(Ok(response)) => Ok(Sent {
                response,
                lease: Some(lease),
            }),
            Ok(Err(mut e)) => {
                let request = e.take_message();
                Err(Failed {
                    error: UpstreamError::exchange(e.into_error()),
                    request,
                })
            }
            Err(_) => Err(Failed {
                error: UpstreamError::ReadTimeout { after: t.read },
                request: None,
            }),
        }
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        let mut sender = match pool::checkout_h2(addr, proto) {
            Some((s, send_timeout)) => {
                send_timeout.set(t.send);
                s
            }
            None => {
                let send_timeout = SendTimeout::new(t.send);
                match connect::h2(&self.tls, addr, proto, t.connect, send_timeout.clone()).await {
                    Ok(s) => {
                        pool::put_h2(addr, proto, s.clone(), send_timeout);
                        s
                    }
                    Err(error) => {
                        return Err(Failed {
                            error,
                            request: Some(req),
                        });
                    }
                }
            }
        };
        if let Err(source) = sender.ready().await {
            pool::drop_h2(addr, proto);
            return Err(Failed {
                error: UpstreamError::Exchange { source },
                request: Some(req),
            });
        }
        let fut = sender.try_send_request(req);
        match tokio::time::timeout(t.read, fut).await {
            Ok(Ok(response)) => Ok(Sent {
                response,
                lease: None,
            }),
            Ok(Err(mut e)) => {
                let request = e.take_message();
                if sender.is_closed() {
                    pool::drop_h2(addr, proto);
                }
                Err(Failed {
                    error: UpstreamError::exchange(e.into_error()),
                    request,
                })
            }
            Err(_) => Err(Failed {
                error: UpstreamError::ReadTimeout { after: t.read },
                request: None,
            }),
        }
    }

    /// A new HTTP/1.1 connection that allows protocol upgrades (WebSocket), not pooled.
    pub async fn send_upgrade(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Response<Incoming>, Failed> {
        let send_timeout = SendTimeout::new(t.send);
        let mut sender = match connect::h1(&self.tls, addr, proto, t.connect, send_timeout).await {
            Ok(s) => s,
            Err(error) => {
                return Err(Failed {
                    error,
                    request: Some(req),
                });
            }
        };
        match tokio::time::timeout(t.read, sender.send_request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(source)) => Err(Failed {
                error: UpstreamError::exchange(source),
                request: None,
            }),
            Err(_) => Err(Failed {
                error: UpstreamError::ReadTimeout { after: t.read },
                request: None,
            }),
        }
    }
}
