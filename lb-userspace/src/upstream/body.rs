//! Bodies crossing the proxy: the request body (with the `proxy-body-size` limit) and the
//! response body (with the `proxy-read-timeout` between reads, returning the connection to
//! the pool when it ends). Both stream frame by frame: nothing is buffered.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::Lease;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The request body passed `proxy-body-size`.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Reading from the other side failed.
    #[error("reading body: {0}")]
    Read(#[source] hyper::Error),
    /// Nothing arrived from the backend within `proxy-read-timeout`.
    #[error("no data from the backend within {0:?}")]
    ReadTimeout(Duration),
}

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    /// A copy being taken for `mirror-target` (boxed: most requests have none).
    tee: Option<Box<Tee>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>) -> Self {
        Self {
            inner: Some(inner),
            limit,
            seen: 0,
            tee: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: None,
            limit: None,
            seen: 0,
            tee: None,
        }
    }

    /// Copies the body into `tee` as it passes.
    pub fn with_tee(mut self, tee: Option<Box<Tee>>) -> Self {
        self.tee = tee;
        self
    }
}

/// A copy of a request body for a mirror (`policy::mirror`): the data frames as they pass
/// upstream, handed over whole once the body ended. Given up (the receiver sees the sender
/// dropped) when the body passes `cap` bytes, fails, or is dropped before its end.
#[derive(Debug)]
pub struct Tee {
    frames: Vec<Bytes>,
    len: usize,
    cap: usize,
    done: tokio::sync::oneshot::Sender<Bytes>,
}

impl Tee {
    pub fn new(cap: usize) -> (Self, tokio::sync::oneshot::Receiver<Bytes>) {
        let (done, rx) = tokio::sync::oneshot::channel();
        let tee = Self {
            frames: Vec::new(),
            len: 0,
            cap,
            done,
        };
        (tee, rx)
    }

    /// Keeps a copy of `data` (a reference count, not the bytes); false: over the cap.
    fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        self.frames.push(data.clone());
        self.len <= self.cap
    }

    fn finish(self) {
        let whole = match self.frames.len() {
            0 => Bytes::new(),
            1 => self.frames.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(self.frames.concat()),
        };
        let _ = self.done.send(whole);
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        this.inner = None;
                        this.tee = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
                    }
                    if let Some(tee) = this.tee.as_mut()
                        && !tee.push(data)
                    {
                        this.tee = None;
                    }
                }
                // The client stops polling a body that says it ended (Content-Length).
                if inner.is_end_stream()
                    && let Some(tee) = this.tee.take()
                {
                    tee.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.tee = None;
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            None => {
                if let Some(tee) = this.tee.take() {
                    tee.finish();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The backend's response body on its way to the client.
pub struct ResponseBody {
    inner: Incoming,
    lease: Option<Lease>,
    read_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts from the last frame (it is re-armed lazily, not per frame).
    armed: bool,
}

impl ResponseBody {
    pub fn new(inner: Incoming, lease: Option<Lease>, read_timeout: Duration) -> Self {
        Self {
            inner,
            lease,
            read_timeout,
            timer: None,
            armed: false,
        }
    }

    fn finished(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if this.inner.is_end_stream() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let after = this.read_timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if !this.armed {
                    timer.as_mut().reset(tokio::time::Instant::now() + after);
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.lease = None;
                        Poll::Ready(Some(Err(BodyError::ReadTimeout(after))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response: not reusable.
        if self.inner.is_end_stream() {
            self.finished();
        }
    }
}
