//! Per-request observation: metrics and one JSON access-log line per request, recorded when
//! the response body ends (or the client goes away), so streams are measured whole. The
//! access log is written off the request path: a bounded channel to a writer task; when it
//! is full the line is dropped and counted, never blocking a request.
use std::{
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

use super::{
    Metrics,
    series::{self, SeriesKey},
};
use crate::proxy::Body;

/// What is known about a request by the time its response ends.
#[derive(Debug, Default, Clone)]
pub struct RequestRecord {
    pub client: Option<SocketAddr>,
    pub host: String,
    pub method: http::Method,
    /// The request path (access log only, left empty when it is off; metrics use the
    /// Ingress path).
    pub request_path: String,
    pub request_id: Option<http::HeaderValue>,
    pub bytes_in: u64,
    /// Filled when a route matched (shared with the route table: no copy per request).
    pub route: Option<Arc<RouteInfo>>,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_duration: Option<Duration>,
    /// TCP(+TLS) connect time of the new upstream connection the request opened; `None`
    /// when it went over a pooled one.
    pub upstream_connect: Option<Duration>,
}

pub use crate::routes::RouteInfo;

/// `--access-log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for AccessLogTarget {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "off" => Self::Off,
            "stdout" | "-" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

pub const ACCESS_LOG_QUEUE: usize = 8192;

pub struct Observer {
    pub metrics: Arc<Metrics>,
    access_log: Option<mpsc::Sender<String>>,
    /// Tells this observer's cached series from another's on the same thread.
    id: u64,
}

fn next_observer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Observer {
    /// An observer and, when logging is on, the writer task to spawn.
    pub fn new(
        metrics: Arc<Metrics>,
        target: &AccessLogTarget,
    ) -> std::io::Result<(Arc<Self>, Option<impl Future<Output = ()> + Send + 'static>)> {
        let writer: Box<dyn std::io::Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok((
                    Arc::new(Self {
                        metrics,
                        access_log: None,
                        id: next_observer_id(),
                    }),
                    None,
                ));
            }
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = mpsc::channel(ACCESS_LOG_QUEUE);
        Ok((
            Arc::new(Self {
                metrics,
                access_log: Some(tx),
                id: next_observer_id(),
            }),
            Some(write_lines(rx, writer)),
        ))
    }

    /// Whether requests go to an access log (else the record's `request_path` is unused).
    pub fn logs_requests(&self) -> bool {
        self.access_log.is_some()
    }

    /// Wraps the response so the request is recorded when its body ends.
    pub fn wrap(
        self: &Arc<Self>,
        rec: RequestRecord,
        started: Instant,
        resp: Response<Body>,
    ) -> Response<Body> {
        self.metrics.active_requests.inc();
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let observed = Observed {
            inner: body,
            done: Some((rec, started, status)),
            bytes_out: 0,
            observer: self.clone(),
        };
        Response::from_parts(parts, observed.boxed())
    }

    fn record(&self, rec: RequestRecord, started: Instant, status: u16, bytes_out: u64) {
        self.metrics.active_requests.dec();
        let duration = started.elapsed();
        let no_route = RouteInfo::default();
        let route = rec.route.as_deref().unwrap_or(&no_route);
        let key = SeriesKey {
            observer: self.id,
            status,
            method: rec.method.as_str(),
            path: &route.path,
            namespace: &route.namespace,
            ingress: &route.ingress,
            service: &route.service,
            canary: route.canary,
            host: &rec.host,
        };
        let m = &self.metrics;
        series::with(&key, m, rec.upstream_duration.is_some(), |s| {
            s.requests.0.inc();
            s.duration.observe(duration.as_secs_f64());
            s.request_size.observe(rec.bytes_in as f64);
            s.response_size.observe(bytes_out as f64);
            if let (Some(up), Some(h)) = (rec.upstream_duration, &s.upstream) {
                h.observe(up.as_secs_f64());
            }
        });
        if let Some(connect) = rec.upstream_connect {
            // New upstream connections only: not worth a cached series.
            m.connect_duration
                .get_or_create(&key.labels())
                .observe(connect.as_secs_f64());
        }
        if let Some(tx) = &self.access_log
            && !route.no_access_log
        {
            let line = access_line(&rec, route, status, bytes_out, duration);
            if tx.try_send(line).is_err() {
                m.access_log_dropped.inc();
            }
        }
    }
}

fn access_line(
    rec: &RequestRecord,
    route: &RouteInfo,
    status: u16,
    bytes_out: u64,
    duration: Duration,
) -> String {
    serde_json::json!({
        "time": rfc3339(SystemTime::now()),
        "client": rec.client.map(|c| c.ip().to_string()).unwrap_or_default(),
        "host": rec.host,
        "method": rec.method.as_str(),
        "path": rec.request_path,
        "status": status,
        "bytes_in": rec.bytes_in,
        "bytes_out": bytes_out,
        "duration": duration.as_secs_f64(),
        "upstream_addr": rec.upstream_addr.map(|a| a.to_string()).unwrap_or_default(),
        "upstream_duration": rec.upstream_duration.map(|d| d.as_secs_f64()),
        "namespace": route.namespace,
        "ingress": route.ingress,
        "service": route.service,
        "canary": route.canary,
        "request_id": rec.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default(),
    })
    .to_string()
}

async fn write_lines(mut rx: mpsc::Receiver<String>, writer: Box<dyn std::io::Write + Send>) {
    let mut writer = std::io::BufWriter::new(writer);
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for line in batch.drain(..) {
            let _ = writer.write_all(line.as_bytes());
            let _ = writer.write_all(b"\n");
        }
        let _ = writer.flush();
    }
}

/// A response body that records its request when it ends or is dropped.
struct Observed {
    inner: Body,
    done: Option<(RequestRecord, Instant, u16)>,
    bytes_out: u64,
    observer: Arc<Observer>,
}

impl Observed {
    fn finish(&mut self) {
        if let Some((rec, started, status)) = self.done.take() {
            self.observer.record(rec, started, status, self.bytes_out);
        }
    }
}

impl hyper::body::Body for Observed {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes_out += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `2026-11-26T05:21:09.123Z` without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_670_469_123);
        assert_eq!(rfc3339(t), "2026-11-26T05:21:09.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
