//! `proxy-send-timeout` as nginx has it: the time between two successive write operations
//! to the backend, not the time for the whole request. A write the backend's socket
//! cannot take (it stopped reading, its buffers are full) starts the clock; any progress
//! stops it; when it runs out the write fails, which fails the connection and the request
//! on it ([`SendTimedOut`] in its error chain). The timer lives in the connection's I/O,
//! so it runs while hyper's connection task is blocked on the write, whoever waits on it.
use std::{
    fmt, io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The send timeout of a connection, set by the request that uses it (a pooled connection
/// serves routes with different timeouts; on a shared h2 connection the latest request's
/// value applies).
#[derive(Clone, Debug)]
pub struct SendTimeout(Arc<AtomicU64>);

impl SendTimeout {
    pub fn new(after: Duration) -> Self {
        let s = Self(Arc::new(AtomicU64::new(0)));
        s.set(after);
        s
    }

    pub fn set(&self, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// The error inside the `io::Error` of a write that waited longer than the send timeout.
#[derive(Debug)]
pub struct SendTimedOut {
    pub after: Duration,
}

impl fmt::Display for SendTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the backend took no data for {:?}", self.after)
    }
}

impl std::error::Error for SendTimedOut {}

/// The send timeout found in an error's source chain.
pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<SendTimedOut>() {
            return Some(t.after);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<SendTimedOut>())
        {
            return Some(t.after);
        }
        cur = e.source();
    }
    None
}

/// A backend connection whose writes may wait at most the [`SendTimeout`].
pub struct TimedWrites<I> {
    inner: I,
    timeout: SendTimeout,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts the current blocked write.
    waiting: bool,
}

impl<I> TimedWrites<I> {
    pub fn new(inner: I, timeout: SendTimeout) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// A write made no progress: start the clock, or fail once it ran out.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let after = self.timeout.get();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        if !self.waiting {
            timer.as_mut().reset(tokio::time::Instant::now() + after);
            self.waiting = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waiting = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    SendTimedOut { after },
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.blocked(cx),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TimedWrites<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedWrites<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_after_the_send_timeout() {
        // A peer that never reads: the pipe's 64 bytes fill up, then writes wait.
        let (_peer, ours) = tokio::io::duplex(64);
        let mut io = TimedWrites::new(ours, SendTimeout::new(Duration::from_millis(50)));
        io.write_all(&[0u8; 64]).await.expect("fits the buffer");
        let err = io.write_all(&[0u8; 1]).await.expect_err("send timeout");
        assert_eq!(find(&err), Some(Duration::from_millis(50)));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_peer_that_reads_slowly_but_steadily_is_not_cut_off() {
        use tokio::io::AsyncReadExt as _;
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut io = TimedWrites::new(ours, SendTimeout::new(Duration::from_millis(200)));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut total = 0;
            // 8 bytes every 50 ms: every write waits, none waits 200 ms.
            while total < 96 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += peer.read(&mut buf).await.expect("read");
            }
            total
        });
        io.write_all(&[1u8; 96]).await.expect("no send timeout");
        assert_eq!(reader.await.expect("reader"), 96);
    }
}
