//! In-process backends for the L7 proxy tests, on loopback: HTTP/1.1 and h2c (prior
//! knowledge) on one port, answering by path:
//! - `/sse`: one event, then the next only once the test opens the gate;
//! - `/ws`: an Upgrade (WebSocket handshake) whose bytes are echoed back;
//! - `/upload`: the number of body bytes received;
//! - `/gate`: answers once the test opens the gate (in-flight requests at shutdown);
//! - `/status/<code>`: that status;
//! - `/grpc.Test/<method>`: gRPC framing: the request message echoed back three times as a
//!   server stream, then trailers `grpc-status: 0`;
//! - anything else: JSON with the backend name, path, HTTP version and request headers.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::{Notify, oneshot},
};

type Body = BoxBody<Bytes, Infallible>;

/// A gate the test opens to let a backend go on.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    notify: Notify,
}

impl Gate {
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// A backend running on its own thread until dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub gate: Arc<Gate>,
    /// Requests answered.
    pub hits: Arc<AtomicU64>,
    /// Of which over HTTP/2.
    pub h2_hits: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestBackend {
    pub fn start(name: &str) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = std_listener.local_addr().expect("backend addr");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let gate = Arc::new(Gate::default());
        let hits = Arc::new(AtomicU64::new(0));
        let h2_hits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let ctx = Arc::new(Ctx {
            name: name.to_owned(),
            gate: gate.clone(),
            hits: hits.clone(),
            h2_hits: h2_hits.clone(),
        });
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("backend runtime");
            rt.block_on(serve(std_listener, ctx, stopped));
            rt.shutdown_background();
        });
        Self {
            addr,
            name: name.to_owned(),
            gate,
            hits,
            h2_hits,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops accepting and closes the port (connections in flight are dropped).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Ctx {
    name: String,
    gate: Arc<Gate>,
    hits: Arc<AtomicU64>,
    h2_hits: Arc<AtomicU64>,
}

async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>, mut stopped: oneshot::Receiver<()>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(answer(&ctx, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(text.into()).boxed());
    *r.status_mut() = status;
    r
}

async fn answer(ctx: &Ctx, mut req: Request<Incoming>) -> Response<Body> {
    ctx.hits.fetch_add(1, Ordering::Relaxed);
    if req.version() == hyper::Version::HTTP_2 {
        ctx.h2_hits.fetch_add(1, Ordering::Relaxed);
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/sse" => {
            let gate = ctx.gate.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: first\n\n"))))
                    .await;
                gate.wait().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: second\n\n"))))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            let mut r = Response::new(StreamBody::new(stream).boxed());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("value"));
            r
        }
        "/ws" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .cloned()
                .unwrap_or_else(|| "none".parse().expect("value"));
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "");
            let h = r.headers_mut();
            h.insert("upgrade", "websocket".parse().expect("value"));
            h.insert("connection", "upgrade".parse().expect("value"));
            h.insert("sec-websocket-accept", key);
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return full(StatusCode::BAD_REQUEST, "body error"),
                }
            }
            full(StatusCode::OK, n.to_string())
        }
        "/gate" => {
            ctx.gate.wait().await;
            full(StatusCode::OK, format!("{} after gate", ctx.name))
        }
        p if p.starts_with("/grpc.Test/") => {
            let mut body = req.into_body();
            let mut msg = Vec::new();
            while let Some(Ok(f)) = body.frame().await {
                if let Some(d) = f.data_ref() {
                    msg.extend_from_slice(d);
                }
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for _ in 0..3 {
                    let _ = tx.send(Ok(Frame::data(Bytes::from(msg.clone())))).await;
                }
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().expect("value"));
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            let mut r = Response::new(StreamBody::new(tokio_stream_from(rx)).boxed());
            r.headers_mut()
                .insert("content-type", "application/grpc".parse().expect("value"));
            r
        }
        // `/bytes/N`: N bytes, "0123456789" repeated, in frames of 16 KiB.
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            let data: Vec<u8> = (0..n).map(|i| b"0123456789"[i % 10]).collect();
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = data
                .chunks(16 * 1024)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel(frames.len().max(1));
            for f in frames {
                let _ = tx.try_send(f);
            }
            drop(tx);
            Response::new(StreamBody::new(tokio_stream_from(rx)).boxed())
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..].parse().unwrap_or(500);
            full(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("{} {code}", ctx.name),
            )
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "backend": ctx.name,
                "path": path,
                "query": req.uri().query().unwrap_or(""),
                "version": format!("{:?}", req.version()),
                // h2's :authority (HTTP/1.1 requests arrive in origin-form: empty).
                "authority": req.uri().authority().map_or("", |a| a.as_str()),
                "headers": headers,
            });
            let mut r = full(StatusCode::OK, format!("{body}\n"));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("value"));
            r
        }
    }
}

/// An mpsc receiver as a Stream (no tokio-stream dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Sync + 'static
where
    T: Send + 'static,
{
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
