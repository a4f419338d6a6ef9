//! `limit-rate` / `limit-rate-after` at response time: the response body is handed on at
//! most `bytes_per_sec` once its first `after` bytes went, as nginx's `limit_rate` paces a
//! response (counted from the start of the body, so a pause of the backend is not made up
//! for by a burst above the rate beyond what the elapsed time allows). Large frames are cut
//! into pieces of at most a tenth of a second's worth, so pacing holds within a frame.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::translate::annotations::ratelimit::ResponseRate;

/// A response body paced by a [`ResponseRate`].
pub struct Throttled<B> {
    inner: B,
    rate: ResponseRate,
    /// When the first byte went.
    start: Option<Instant>,
    /// Bytes handed on so far.
    sent: u64,
    /// The rest of a frame cut into pieces.
    pending: Option<Bytes>,
    /// Until when the next piece waits.
    wait: Option<Pin<Box<Sleep>>>,
}

impl<B> Throttled<B> {
    pub fn new(inner: B, rate: ResponseRate) -> Self {
        Self {
            inner,
            rate,
            start: None,
            sent: 0,
            pending: None,
            wait: None,
        }
    }

    /// The largest piece handed on at once: a tenth of a second's worth (at least 1 KiB).
    fn piece(&self) -> usize {
        usize::try_from(self.rate.bytes_per_sec / 10)
            .unwrap_or(usize::MAX)
            .max(1024)
    }

    /// Hands on up to a piece of `data`, keeping the rest, and sets when the next may go.
    fn take(&mut self, mut data: Bytes) -> Bytes {
        let piece = if data.len() > self.piece() {
            let head = data.split_to(self.piece());
            self.pending = Some(data);
            head
        } else {
            data
        };
        let start = *self.start.get_or_insert_with(Instant::now);
        self.sent += piece.len() as u64;
        if let Some(over) = self.sent.checked_sub(self.rate.after) {
            let due = start + Duration::from_secs_f64(over as f64 / self.rate.bytes_per_sec as f64);
            if due > Instant::now() {
                self.wait = Some(Box::pin(tokio::time::sleep_until(due)));
            }
        }
        piece
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(wait) = this.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            this.wait = None;
        }
        if let Some(rest) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(this.take(rest)))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(this.take(data))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.pending {
            let extra = rest.len() as u64;
            hint.set_lower(hint.lower() + extra);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + extra);
            }
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Full};

    use super::*;

    /// (virtual ms since start, bytes) of each frame of `body` paced by `rate`.
    async fn schedule(body: Bytes, rate: ResponseRate) -> Vec<(u64, usize)> {
        let start = Instant::now();
        let mut t = Throttled::new(Full::new(body), rate);
        let mut out = Vec::new();
        while let Some(frame) = t.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            out.push((start.elapsed().as_millis() as u64, data.len()));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_paced_after_its_free_bytes() {
        // 10 KiB/s after 5 KiB: a 25 KiB body in 1 KiB pieces; the last of the 20 paced
        // KiB may go at 1.9 s (each piece waits for the bytes before it).
        let rate = ResponseRate {
            bytes_per_sec: 10 * 1024,
            after: 5 * 1024,
        };
        let frames = schedule(Bytes::from(vec![7u8; 25 * 1024]), rate).await;
        assert_eq!(frames.iter().map(|(_, n)| n).sum::<usize>(), 25 * 1024);
        assert!(frames.iter().all(|(_, n)| *n == 1024), "{frames:?}");
        let times: Vec<u64> = frames.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(
            &times[..6],
            &[0, 0, 0, 0, 0, 0],
            "the free 5 KiB and the first paced piece"
        );
        assert_eq!(times[6], 100, "then one piece per 100 ms");
        assert_eq!(*times.last().expect("frames"), 1_900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_body_or_no_limit_reached_goes_at_once() {
        let rate = ResponseRate {
            bytes_per_sec: 1024 * 1024,
            after: 0,
        };
        let frames = schedule(Bytes::from_static(b"hello"), rate).await;
        assert_eq!(frames, [(0, 5)]);
    }
}
