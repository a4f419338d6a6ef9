//! `ssl-passthrough`: a TLS connection whose ClientHello names a passthrough host is not
//! terminated; its bytes (the ClientHello read so far, then everything else both ways) are
//! relayed to an endpoint of the host's backend, which does TLS itself. Endpoints are tried
//! round robin, at most [`MAX_TRIES`], each within the Ingress's `proxy-connect-timeout`;
//! a refused or silent one is reported to the outlier detection as a connect failure.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
};
use tracing::debug;

use crate::{
    balance::{Outcome, Strategy},
    metrics::count_passthrough,
    routes::Passthrough,
};

/// Endpoints tried for one connection.
pub const MAX_TRIES: usize = 3;

/// Relays `client` (whose first bytes, `hello`, were read already) to `target`'s backend
/// until either side closes.
pub async fn relay(mut client: TcpStream, hello: Vec<u8>, target: &Passthrough) {
    let backend = &target.backend;
    let count = |outcome| count_passthrough(&target.ingress, &backend.service, outcome);
    let mut tried = Vec::new();
    let mut upstream = loop {
        let Some(i) = backend.choose(Strategy::RoundRobin, &tried) else {
            count(if tried.is_empty() {
                "no_endpoint"
            } else {
                "connect_failed"
            });
            debug!(backend = %backend, tried = tried.len(), "ssl-passthrough: no endpoint to relay to");
            return;
        };
        let Some(&addr) = backend.endpoints.get(i) else {
            return;
        };
        let start = Instant::now();
        match tokio::time::timeout(target.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) => debug!(%addr, error = %e, "ssl-passthrough: connect failed"),
            Err(_) => debug!(%addr, "ssl-passthrough: connect timed out"),
        }
        backend.report(i, Outcome::ConnectFailure, start.elapsed());
        tried.push(i);
        if tried.len() >= MAX_TRIES {
            count("connect_failed");
            return;
        }
    };
    count("relayed");
    let _ = upstream.set_nodelay(true);
    if let Err(e) = upstream.write_all(&hello).await {
        debug!(error = %e, "ssl-passthrough: backend closed at once");
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "ssl-passthrough: connection ended with error");
    }
}

/// A stream with bytes already read from it put back in front (the ClientHello read to
/// find the server name, for rustls to read again).
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The stream itself, for socket options.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let rest = &self.prefix[self.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn rewind_reads_the_prefix_then_the_stream_and_writes_through() {
        let (mut far, near) = tokio::io::duplex(64);
        let mut r = Rewind::new(b"hello ".to_vec(), near);
        far.write_all(b"world").await.expect("write");
        drop(far.shutdown().await);
        let mut small = [0u8; 4];
        assert_eq!(
            r.read(&mut small).await.expect("read"),
            4,
            "bounded by the buffer"
        );
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"o world");
        r.write_all(b"ok").await.expect("write");
        let mut got = [0u8; 2];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ok");
    }
}
