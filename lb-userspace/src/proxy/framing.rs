//! HTTP/1.1 request framing followed on the raw bytes of a client connection, beside
//! hyper's parser, for two things hyper's server does not let a service do:
//!
//! - Reject request smuggling. A request head with both `Content-Length` and
//!   `Transfer-Encoding` reaches the service with the `Content-Length` removed (hyper
//!   frames it by the `Transfer-Encoding` alone and closes the connection afterwards, as
//!   RFC 9112 6.1 allows; it has no option to refuse it instead). nginx answers such a
//!   request with 400, and so do we: [`ClientIo`] sees the raw head, records its index on
//!   the connection in [`Verdict`], and the proxy refuses the request with that index.
//!   Differing duplicate `Content-Length` values, a `Transfer-Encoding` that does not end in
//!   `chunked` and a `Transfer-Encoding` on HTTP/1.0 are refused by hyper itself (400).
//! - Bound the time to the first complete request head, the protocol sniffing of the
//!   plain port included: hyper's `header_read_timeout` only runs once hyper-util's auto
//!   builder has decided on HTTP/1, so a client that sends nothing (or the h2 preface a
//!   byte at a time) would otherwise hold its connection for ever.
//!
//! To find where each head starts, [`Framing`] skips bodies exactly as hyper does
//! (`Content-Length`, or chunked with strict CRLF, extensions and trailers). It stops
//! following a connection (and never flags a later request) at anything it does not
//! follow: the h2 preface, an `Upgrade` or `CONNECT` request (after it the bytes may not be
//! HTTP any more), or bytes hyper refuses anyway (its 400/431 closes the connection).
use std::{
    io,
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

/// A head (or trailer section) larger than this is not followed: hyper refuses it (431)
/// well before, at `max_header_bytes`.
const MAX_HEAD: usize = 1024 * 1024;

/// The smuggling verdict of one connection, shared by its I/O and its service.
#[derive(Debug)]
pub struct Verdict {
    /// Index (0-based, in arrival order) of the request whose head had both
    /// `Content-Length` and `Transfer-Encoding`; `u64::MAX`: none.
    smuggled_at: AtomicU64,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            smuggled_at: AtomicU64::new(u64::MAX),
        }
    }
}

impl Verdict {
    /// Whether HTTP/1 request number `index` on this connection is a smuggling attempt.
    pub fn smuggled(&self, index: u64) -> bool {
        self.smuggled_at.load(Ordering::Acquire) == index
    }
}

/// A request extension: this request must be refused (400) without being forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smuggled;

/// What the current request head says about its framing.
#[derive(Debug, Default)]
struct Head {
    request_line: bool,
    http10: bool,
    connect: bool,
    upgrade: bool,
    content_length: Option<u64>,
    has_content_length: bool,
    transfer_encoding: bool,
    chunked: bool,
    /// Something hyper refuses (invalid or conflicting Content-Length, obs-fold, ...).
    invalid: bool,
    bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (or the empty lines allowed before one).
    Head,
    /// Bytes of a Content-Length body left.
    Fixed(u64),
    /// Chunked body, as hyper's decoder: size digits, whitespace, extension, CRLF, data,
    /// CRLF; after the last chunk, trailer lines up to an empty line.
    ChunkStart,
    ChunkSize(u64),
    ChunkLws(u64),
    ChunkExt(u64),
    ChunkSizeLf(u64),
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
    /// The rest of the h2 preface after `PRI * HTTP/2.0\r\n`: bytes matched so far.
    Preface(usize),
    /// Not followed any more.
    Stopped,
}

/// The h2 connection preface after its first line.
const PREFACE_REST: &[u8] = b"\r\nSM\r\n\r\n";

/// The framing of the requests on one connection, fed with the bytes as they are read.
#[derive(Debug)]
pub struct Framing {
    state: State,
    head: Head,
    /// The current head line, without its line end.
    line: Vec<u8>,
    /// Complete request heads so far.
    heads: u64,
    /// Index of the first head with both Content-Length and Transfer-Encoding.
    smuggled_at: Option<u64>,
    trailer_bytes: usize,
    /// The whole h2 preface was read.
    preface: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            state: State::Head,
            head: Head::default(),
            line: Vec::new(),
            heads: 0,
            smuggled_at: None,
            trailer_bytes: 0,
            preface: false,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn grow(size: u64, digit: u64) -> State {
    match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
        Some(s) => State::ChunkSize(s),
        None => State::Stopped,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// hyper's `Content-Length` syntax: ASCII digits only.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// hyper's test: the last coding of a visible-ASCII value is `chunked`.
fn ends_chunked(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        && v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"))
}

impl Framing {
    /// Requests whose heads were complete so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// The first request (by index) that had both Content-Length and Transfer-Encoding.
    pub fn smuggled_at(&self) -> Option<u64> {
        self.smuggled_at
    }

    /// Whether the bytes are no longer followed.
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether a first request head (or the whole h2 preface) has arrived.
    pub fn started(&self) -> bool {
        self.heads > 0 || self.preface
    }

    /// Follows `bytes`, the next bytes read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return,
                State::Head => {
                    let (part, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                        Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                        None => (bytes, &bytes[bytes.len()..], false),
                    };
                    bytes = rest;
                    self.head.bytes += part.len() + usize::from(complete);
                    if self.head.bytes > MAX_HEAD {
                        self.state = State::Stopped;
                        return;
                    }
                    self.line.extend_from_slice(part);
                    if complete {
                        let mut line = std::mem::take(&mut self.line);
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        self.head_line(&line);
                        line.clear();
                        self.line = line;
                    }
                }
                State::Fixed(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        State::Head
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::Preface(matched) => {
                    self.state = if PREFACE_REST.get(matched) != Some(&bytes[0]) {
                        State::Stopped
                    } else if matched + 1 == PREFACE_REST.len() {
                        self.preface = true;
                        State::Stopped
                    } else {
                        State::Preface(matched + 1)
                    };
                    bytes = &bytes[1..];
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                _ => {
                    self.chunk_byte(bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
    }

    fn chunk_byte(&mut self, b: u8) {
        self.state = match (self.state, b) {
            (State::ChunkStart, b) => match hex(b) {
                Some(d) => State::ChunkSize(d),
                None => State::Stopped,
            },
            (State::ChunkSize(s), b) => match (hex(b), b) {
                (Some(d), _) => grow(s, d),
                (None, b' ' | b'\t') => State::ChunkLws(s),
                (None, b';') => State::ChunkExt(s),
                (None, b'\r') => State::ChunkSizeLf(s),
                _ => State::Stopped,
            },
            (State::ChunkLws(s), b' ' | b'\t') => State::ChunkLws(s),
            (State::ChunkLws(s), b';') => State::ChunkExt(s),
            (State::ChunkLws(s) | State::ChunkExt(s), b'\r') => State::ChunkSizeLf(s),
            (State::ChunkExt(_), b'\n') => State::Stopped,
            (State::ChunkExt(s), _) => State::ChunkExt(s),
            (State::ChunkSizeLf(0), b'\n') => {
                self.trailer_bytes = 0;
                State::EndCr
            }
            (State::ChunkSizeLf(s), b'\n') => State::ChunkData(s),
            (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, b'\n') => State::ChunkStart,
            (State::EndCr, b'\r') => State::EndLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::EndCr | State::Trailer, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_HEAD {
                    State::Stopped
                } else {
                    State::Trailer
                }
            }
            (State::TrailerLf, b'\n') => State::EndCr,
            (State::EndLf, b'\n') => State::Head,
            _ => State::Stopped,
        };
    }

    fn head_line(&mut self, line: &[u8]) {
        let head = &mut self.head;
        if !head.request_line {
            if line.is_empty() {
                // Empty lines before a request line are skipped (RFC 9112 2.2), as hyper does.
                head.bytes = 0;
                return;
            }
            if line == b"PRI * HTTP/2.0" {
                // The h2 preface (prior knowledge): followed to its end, then h2 framing.
                self.state = State::Preface(0);
                return;
            }
            head.http10 = line.ends_with(b" HTTP/1.0");
            if !head.http10 && !line.ends_with(b" HTTP/1.1") {
                self.state = State::Stopped;
                return;
            }
            head.connect = line.starts_with(b"CONNECT ");
            head.request_line = true;
            return;
        }
        if line.is_empty() {
            self.end_of_head();
            return;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // obs-fold: hyper refuses it.
            head.invalid = true;
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            head.invalid = true;
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            head.has_content_length = true;
            match (digits(value), head.content_length) {
                (None, _) => head.invalid = true,
                (Some(n), Some(prev)) if n != prev => head.invalid = true,
                (Some(n), _) => head.content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encoding = true;
            // As hyper: the last Transfer-Encoding line decides.
            head.chunked = ends_chunked(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
    }

    fn end_of_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        let index = self.heads;
        self.heads += 1;
        self.state = if head.transfer_encoding && head.http10 {
            // hyper refuses it (400).
            State::Stopped
        } else if head.transfer_encoding && head.has_content_length {
            // hyper would frame it by Transfer-Encoding and close the connection after it.
            self.smuggled_at.get_or_insert(index);
            State::Stopped
        } else if head.invalid || (head.transfer_encoding && !head.chunked) {
            State::Stopped
        } else if head.upgrade || head.connect {
            // What follows may not be HTTP/1 any more.
            State::Stopped
        } else if head.transfer_encoding {
            State::ChunkStart
        } else {
            match head.content_length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => State::Head,
            }
        };
    }
}

/// A client connection whose reads are followed by [`Framing`], with a deadline for the
/// first complete request head.
pub struct ClientIo<I> {
    inner: I,
    framing: Framing,
    verdict: Arc<Verdict>,
    first_head: Option<(Pin<Box<Sleep>>, Duration)>,
}

impl<I> ClientIo<I> {
    /// Follows `inner`; the connection fails (and closes) when no request head is complete
    /// within `first_head_within`.
    pub fn new(inner: I, verdict: Arc<Verdict>, first_head_within: Duration) -> Self {
        Self {
            inner,
            framing: Framing::default(),
            verdict,
            first_head: Some((
                Box::pin(tokio::time::sleep(first_head_within)),
                first_head_within,
            )),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.framing.stopped() {
                    this.framing.feed(&buf.filled()[before..]);
                    if let Some(i) = this.framing.smuggled_at() {
                        this.verdict.smuggled_at.store(i, Ordering::Release);
                    }
                }
                // Once a request has begun hyper's timers take over (header_read_timeout
                // for later heads, keep-alive pings for h2). A connection that stopped
                // being followed otherwise is one hyper refuses (400/431) and closes.
                if this.first_head.is_some() && (this.framing.started() || this.framing.stopped()) {
                    this.first_head = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some((deadline, after)) = &mut this.first_head
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no complete request head within {after:?}"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> Framing {
        let mut f = Framing::default();
        for c in chunks {
            f.feed(c);
        }
        f
    }

    /// Feeds `bytes` one byte at a time and all at once: same result.
    fn both_ways(bytes: &[u8]) -> Framing {
        let whole = fed(&[bytes]);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let split = fed(&singles);
        assert_eq!(
            (whole.heads(), whole.smuggled_at(), whole.stopped()),
            (split.heads(), split.smuggled_at(), split.stopped()),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        whole
    }

    #[test]
    fn keep_alive_requests_with_bodies_are_counted() {
        let f = both_ways(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n3 \r\n\r\n\r\r\n0\r\nX-Trailer: t\r\n\r\n\
              GET /last HTTP/1.1\n\n",
        );
        assert_eq!(f.heads(), 4);
        assert_eq!(f.smuggled_at(), None);
        assert!(!f.stopped());
    }

    #[test]
    fn a_body_that_looks_like_a_smuggling_head_is_skipped() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let f = both_ways(&req);
        assert_eq!((f.heads(), f.smuggled_at()), (2, None));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_flagged_either_order() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 0\r\n\r\n",
        ] {
            let mut req = b"GET /first HTTP/1.1\r\n\r\n".to_vec();
            req.extend_from_slice(head);
            req.extend_from_slice(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
            let f = both_ways(&req);
            assert_eq!(
                f.smuggled_at(),
                Some(1),
                "{}",
                String::from_utf8_lossy(head)
            );
            assert!(f.stopped());
        }
    }

    #[test]
    fn what_hyper_refuses_or_upgrades_stops_following() {
        for req in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        ] {
            let f = both_ways(req);
            assert!(f.stopped(), "{}", String::from_utf8_lossy(req));
            assert_eq!(f.smuggled_at(), None);
        }
    }

    #[test]
    fn the_h2_preface_counts_as_a_start_only_when_complete() {
        let full = both_ways(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(full.started() && full.stopped());
        let partial = both_ways(b"PRI * HTTP/2.0\r\n\r\nSM\r\n");
        assert!(!partial.started() && !partial.stopped());
        let wrong = both_ways(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
        assert!(!wrong.started() && wrong.stopped());
    }

    #[test]
    fn duplicate_equal_content_lengths_frame_the_body() {
        let f = both_ways(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab\
              GET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!((f.heads(), f.stopped()), (2, false));
    }

    #[tokio::test]
    async fn the_first_head_has_a_deadline_and_later_ones_do_not() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let verdict = Arc::new(Verdict::default());
        let (client, server) = tokio::io::duplex(1024);
        let mut io = ClientIo::new(server, verdict.clone(), Duration::from_millis(50));
        let mut buf = [0u8; 64];
        let err = io.read(&mut buf).await.expect_err("deadline");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = ClientIo::new(server, verdict.clone(), Duration::from_millis(50));
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let n = io.read(&mut buf).await.expect("head");
        assert_eq!(n, 18);
        // Past the deadline: reads wait for the client (hyper's own timer runs now).
        let wait = tokio::time::timeout(Duration::from_millis(150), io.read(&mut buf)).await;
        assert!(wait.is_err(), "read ended: {wait:?}");
        client
            .write_all(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .expect("write");
        let mut big = [0u8; 256];
        let _ = io.read(&mut big).await.expect("read");
        assert!(verdict.smuggled(1));
        assert!(!verdict.smuggled(0));
    }
}
