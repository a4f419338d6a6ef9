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

pub use body::{BodyError, RequestBody, ResponseBody, Tee};
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
    /// How long the connection took to establish when it was opened for this request
    /// (`None`: a pooled one).
    pub connect: Option<Duration>,
}

/// A failed attempt; `request` is the request when it was never written (so it can go to
/// another endpoint as it is, body included).
pub struct Failed {
    pub error: UpstreamError,
    pub request: Option<Request<RequestBody>>,
    /// As [`Sent::connect`]: set when a new connection was opened before the failure.
    pub connect: Option<Duration>,
}

impl Failed {
    fn unsent(error: UpstreamError, request: Request<RequestBody>) -> Self {
        Self {
            error,
            request: Some(request),
            connect: None,
        }
    }

    fn read_timeout(after: Duration) -> Self {
        Self {
            error: UpstreamError::ReadTimeout { after },
            request: None,
            connect: None,
        }
    }
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
        let connected = match Box::pin(connect::h1(
            &self.tls,
            addr,
            proto,
            t.connect,
            send_timeout.clone(),
        ))
        .await
        {
            Ok(c) => c,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        let lease = Lease::new(addr, proto, connected.sender, send_timeout);
        let connect = Some(connected.took);
        match self.exchange_h1(lease, req, t).await {
            Ok(sent) => Ok(Sent { connect, ..sent }),
            Err(failed) => Err(Failed { connect, ..failed }),
        }
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
                connect: None,
            }),
            Ok(Err(mut e)) => {
                let request = e.take_message();
                Err(Failed {
                    error: UpstreamError::exchange(e.into_error()),
                    request,
                    connect: None,
                })
            }
            Err(_) => Err(Failed::read_timeout(t.read)),
        }
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        let (mut sender, connect) = match pool::checkout_h2(addr, proto) {
            Some((s, send_timeout)) => {
                send_timeout.set(t.send);
                (s, None)
            }
            None => {
                let send_timeout = SendTimeout::new(t.send);
                match connect::h2(&self.tls, addr, proto, t.connect, send_timeout.clone()).await {
                    Ok(c) => {
                        pool::put_h2(addr, proto, c.sender.clone(), send_timeout);
                        (c.sender, Some(c.took))
                    }
                    Err(error) => return Err(Failed::unsent(error, req)),
                }
            }
        };
        if let Err(source) = sender.ready().await {
            pool::drop_h2(addr, proto);
            return Err(Failed {
                connect,
                ..Failed::unsent(UpstreamError::Exchange { source }, req)
            });
        }
        let fut = sender.try_send_request(req);
        match tokio::time::timeout(t.read, fut).await {
            Ok(Ok(response)) => Ok(Sent {
                response,
                lease: None,
                connect,
            }),
            Ok(Err(mut e)) => {
                let request = e.take_message();
                if sender.is_closed() {
                    pool::drop_h2(addr, proto);
                }
                Err(Failed {
                    error: UpstreamError::exchange(e.into_error()),
                    request,
                    connect,
                })
            }
            Err(_) => Err(Failed {
                connect,
                ..Failed::read_timeout(t.read)
            }),
        }
    }

    /// A new HTTP/1.1 connection that allows protocol upgrades (WebSocket), not pooled
    /// (`lease` is `None`).
    pub async fn send_upgrade(
        &self,
        addr: SocketAddr,
        proto: BackendProtocol,
        req: Request<RequestBody>,
        t: Timeouts,
    ) -> Result<Sent, Failed> {
        let send_timeout = SendTimeout::new(t.send);
        let mut c = match connect::h1(&self.tls, addr, proto, t.connect, send_timeout).await {
            Ok(c) => c,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        let connect = Some(c.took);
        match tokio::time::timeout(t.read, c.sender.send_request(req)).await {
            Ok(Ok(response)) => Ok(Sent {
                response,
                lease: None,
                connect,
            }),
            Ok(Err(source)) => Err(Failed {
                error: UpstreamError::exchange(source),
                request: None,
                connect,
            }),
            Err(_) => Err(Failed {
                connect,
                ..Failed::read_timeout(t.read)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_time_is_reported_for_new_connections_only() {
        // A real TCP connection to a local listener is timed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            for _ in 0..2 {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                        .await
                        .expect("read");
                    assert!(n > 0, "client closed early");
                    head.extend_from_slice(&buf[..n]);
                }
                tokio::io::AsyncWriteExt::write_all(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                )
                .await
                .expect("write");
            }
        });
        let upstreams = Upstreams::new().expect("tls");
        let t = Timeouts {
            connect: Duration::from_secs(5),
            send: Duration::from_secs(5),
            read: Duration::from_secs(5),
        };
        let get = || {
            Request::get("/")
                .header(http::header::HOST, "x")
                .body(RequestBody::empty())
                .expect("request")
        };
        for first in [true, false] {
            let Ok(sent) = upstreams.send(addr, BackendProtocol::Http, get(), t).await else {
                panic!("request failed");
            };
            assert_eq!(sent.connect.is_some(), first, "first request: {first}");
            assert!(sent.connect.is_none_or(|d| d < Duration::from_secs(5)));
            let body = http_body_util::BodyExt::collect(ResponseBody::new(
                sent.response.into_body(),
                sent.lease,
                t.read,
            ))
            .await
            .expect("body");
            assert_eq!(&body.to_bytes()[..], b"ok");
        }
        server.await.expect("server");

        // A failed connect reports no connect time and hands the request back.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let Err(failed) = upstreams
            .send(closed, BackendProtocol::Http, get(), t)
            .await
        else {
            panic!("a closed port accepted");
        };
        assert!(failed.error.is_connect());
        assert!(failed.connect.is_none());
        assert!(failed.request.is_some());
    }
}
