//! Connections to backends: HTTP/1.1, h2 and h2c, over TCP or TLS (`backend-protocol`),
//! kept in per-thread pools so that the hot path takes no lock (each proxy worker thread
//! runs its own runtime; see `proxy::listen`).
mod body;
mod connect;
mod error;
mod pool;
mod send_timeout;

use std::{cell::Cell, net::SocketAddr, time::Duration};

use http::Request;
use hyper::{Response, body::Incoming};

pub use body::{BodyError, RequestBody, ResponseBody};
pub use error::UpstreamError;
pub use pool::Lease;
use send_timeout::SendTimeout;

use crate::{tls::upstream::UpstreamTls, translate::annotations::upstream::BackendProtocol};

tokio::task_local! {
    /// Where [`with_connect_time`] collects the connect time of new connections.
    static CONNECT_TIME: Cell<Option<Duration>>;
}

/// Runs `fut` (a request's forwarding) and returns, beside its output, how long the last
/// new upstream connection it opened took to establish (TCP connect, plus the TLS
/// handshake for TLS backends): `None` when only pooled connections were used. A
/// task-local rather than a return value, so the retry and upgrade paths in between need
/// not carry it.
pub async fn with_connect_time<F: Future>(fut: F) -> (F::Output, Option<Duration>) {
    // Boxed: the task-local scope moves its future into place, and the forwarding future
    // is large.
    let fut = Box::pin(fut);
    CONNECT_TIME
        .scope(Cell::new(None), async move {
            let out = fut.await;
            (out, CONNECT_TIME.with(Cell::get))
        })
        .await
}

/// Records a connection established in `took` (outside [`with_connect_time`]: ignored).
fn record_connect(took: Duration) {
    let _ = CONNECT_TIME.try_with(|c| c.set(Some(took)));
}

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
            // Boxed (as new connections below): only the pooled HTTP/1.1 exchange stays
            // inline in the request's future, which is moved into place for every request.
            Box::pin(self.send_h2(addr, proto, req, t)).await
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
        let sender = match Box::pin(connect::h1(
            &self.tls,
            addr,
            proto,
            t.connect,
            send_timeout.clone(),
        ))
        .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_time_is_seen_only_for_new_connections() {
        let (out, took) = with_connect_time(async {
            record_connect(Duration::from_millis(3));
            7
        })
        .await;
        assert_eq!((out, took), (7, Some(Duration::from_millis(3))));
        assert_eq!(with_connect_time(async { 7 }).await, (7, None));
        // Outside a scope: ignored, no panic.
        record_connect(Duration::from_millis(1));

        // A real TCP connection to a local listener is timed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let tls = UpstreamTls::new().expect("tls");
        let (sender, took) = with_connect_time(connect::h1(
            &tls,
            addr,
            BackendProtocol::Http,
            Duration::from_secs(5),
            send_timeout::SendTimeout::new(Duration::from_secs(5)),
        ))
        .await;
        assert!(sender.is_ok());
        assert!(took.is_some_and(|d| d < Duration::from_secs(5)), "{took:?}");
        let _server_side = accept.await.expect("join").expect("accept");
        // A failed connect records nothing.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let (r, took) = with_connect_time(connect::h1(
            &tls,
            closed,
            BackendProtocol::Http,
            Duration::from_secs(5),
            send_timeout::SendTimeout::new(Duration::from_secs(5)),
        ))
        .await;
        assert!(r.is_err());
        assert_eq!(took, None);
    }
}
