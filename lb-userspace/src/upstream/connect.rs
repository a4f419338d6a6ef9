//! Opening connections to an endpoint: TCP (no Nagle), optional TLS, then the HTTP/1.1 or
//! h2 handshake; the connection task runs on the current runtime.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::{
    RequestBody, UpstreamError,
    send_timeout::{SendTimeout, TimedWrites},
};
use crate::{tls::upstream::UpstreamTls, translate::annotations::upstream::BackendProtocol};

/// h2 keep-alive pings find dead backends on idle multiplexed connections.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// A new connection's sender and how long it took to establish (TCP connect, plus the TLS
/// handshake for TLS backends).
pub struct Connected<S> {
    pub sender: S,
    pub took: Duration,
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout {
            addr,
            after: timeout,
        })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn tls(
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    stream: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(
        timeout,
        TlsConnector::from(cfg.clone()).connect(name, stream),
    )
    .await
    .map_err(|_| UpstreamError::ConnectTimeout {
        addr,
        after: timeout,
    })?
    .map_err(|source| UpstreamError::Tls { addr, source })
}

pub async fn h1(
    tls_cfg: &UpstreamTls,
    addr: SocketAddr,
    proto: BackendProtocol,
    timeout: Duration,
    send: SendTimeout,
) -> Result<Connected<http1::SendRequest<RequestBody>>, UpstreamError> {
    let started = Instant::now();
    let stream = tcp(addr, timeout).await?;
    if proto.is_tls() {
        let stream = tls(&tls_cfg.http1, addr, stream, timeout).await?;
        let took = started.elapsed();
        let sender = h1_handshake(addr, TimedWrites::new(stream, send)).await?;
        Ok(Connected { sender, took })
    } else {
        let took = started.elapsed();
        let sender = h1_handshake(addr, TimedWrites::new(stream, send)).await?;
        Ok(Connected { sender, took })
    }
}

async fn h1_handshake<I>(
    addr: SocketAddr,
    io: I,
) -> Result<http1::SendRequest<RequestBody>, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // One flat buffer per write, as on the server side (see `proxy::listen::builder`).
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

pub async fn h2(
    tls_cfg: &UpstreamTls,
    addr: SocketAddr,
    proto: BackendProtocol,
    timeout: Duration,
    send: SendTimeout,
) -> Result<Connected<http2::SendRequest<RequestBody>>, UpstreamError> {
    let started = Instant::now();
    let stream = tcp(addr, timeout).await?;
    if proto.is_tls() {
        let stream = tls(&tls_cfg.h2, addr, stream, timeout).await?;
        let took = started.elapsed();
        let sender = h2_handshake(addr, TimedWrites::new(stream, send)).await?;
        Ok(Connected { sender, took })
    } else {
        let took = started.elapsed();
        let sender = h2_handshake(addr, TimedWrites::new(stream, send)).await?;
        Ok(Connected { sender, took })
    }
}

async fn h2_handshake<I>(
    addr: SocketAddr,
    io: I,
) -> Result<http2::SendRequest<RequestBody>, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(%addr, error = %e, "upstream h2 connection ended");
        }
    });
    Ok(sender)
}
