//! Listeners: HTTP/1.1 and h2c (prior knowledge) on the plain port, TLS with ALPN (h2,
//! http/1.1) on the HTTPS port, hyper-util's auto builder with the limits that keep a
//! client from holding the proxy hostage (header size and count, header read timeout, h2
//! streams and resets). `start_workers` runs one single-threaded runtime per core, each
//! with its own SO_REUSEPORT socket per address, so connections, pools and requests stay
//! on one core.
use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use http::{Request, Version};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::{
    DRAIN_DEADLINE, Proxy,
    framing::{ClientIo, Smuggled, Verdict},
    passthrough::{self, Rewind},
};
use crate::tls::{
    ALPN_H2,
    client_hello::{self, Hello},
};

/// Limits on what a client may send before its request is handled.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Time for a complete HTTP/1.1 request head (slowloris); also for a connection's first
    /// request head from accept, protocol detection included (`--client-header-timeout`).
    pub header_read_timeout: Duration,
    /// Header lines per request (more: 431).
    pub max_headers: usize,
    /// Bytes of request head buffered (more: 431). hyper's floor is 8 KiB.
    pub max_header_bytes: usize,
    /// Concurrent h2 streams per connection.
    pub h2_max_streams: u32,
    /// h2 streams a client may reset before they are accepted (CVE-2023-44487).
    pub h2_max_pending_resets: usize,
    /// h2 streams the server may reset for protocol errors before it closes the connection.
    pub h2_max_local_resets: usize,
    /// h2 header list size (decoded).
    pub h2_max_header_list: u32,
    /// Time for a TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            h2_max_streams: 128,
            h2_max_pending_resets: 20,
            h2_max_local_resets: 1024,
            h2_max_header_list: 32 * 1024,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Which listener a request came in on (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub tls: bool,
}

impl ConnInfo {
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// The connection builder with `limits` applied.
pub fn builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // writev(false): hyper copies head and body into one buffer and writes it with `send`,
    // which is cheaper in the kernel than `writev` (no vfs layer): +5% keep-alive requests
    // per CPU-second (paired A/B); bulk transfers measured the same.
    b.http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .max_local_error_reset_streams(limits.h2_max_local_resets)
        .max_header_list_size(limits.h2_max_header_list)
        .keep_alive_interval(Duration::from_secs(30));
    b
}

/// A listening socket with SO_REUSEPORT, so that each worker can have its own.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    listener.into_std()
}

/// Serves one listener until `shutdown` turns true, then drains its connections (up to
/// [`DRAIN_DEADLINE`]): HTTP connections finish their requests in flight; a TLS
/// connection's task holds its drain watcher from accept on, so one still in its
/// handshake, and an `ssl-passthrough` relay (whose requests cannot be seen), are given
/// until the deadline to end by themselves.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    let graceful = GracefulShutdown::new();
    let limits = proxy.limits;
    let http = Arc::new(builder(&limits));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            local_port,
            tls: tls.is_some(),
        };
        match &tls {
            None => serve_conn(&proxy, &http, graceful.watcher(), stream, info, None),
            Some(acceptor) => {
                // `watcher` lives as long as the task: through the handshake, or the relay.
                let (proxy, http, watcher, acceptor) = (
                    proxy.clone(),
                    http.clone(),
                    graceful.watcher(),
                    acceptor.clone(),
                );
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + limits.tls_handshake_timeout;
                    let Some(stream) = passthrough_or_tls(&proxy, stream, peer, deadline).await
                    else {
                        return;
                    };
                    let accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(tls_stream)) => {
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                            serve_conn(&proxy, &http, watcher, tls_stream, info, Some(h2));
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("drain deadline passed with connections still open");
    }
}

/// On the HTTPS port, when some host is `ssl-passthrough`: reads the ClientHello and
/// relays the connection if its server name is such a host (`None`); otherwise (and always
/// when no host is) the stream for TLS, with whatever was read put back in front.
async fn passthrough_or_tls(
    proxy: &Proxy,
    mut stream: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<Rewind<TcpStream>> {
    let table = proxy.routes.load();
    if table.passthrough.is_empty() {
        return Some(Rewind::new(Vec::new(), stream));
    }
    let (bytes, hello) =
        match tokio::time::timeout_at(deadline, client_hello::read(&mut stream)).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "connection ended before its ClientHello");
                return None;
            }
            Err(_) => {
                debug!(%peer, "ClientHello timed out");
                return None;
            }
        };
    if let Hello::Complete(Some(name)) = &hello
        && let Some(target) = table.passthrough_for(name)
    {
        passthrough::relay(stream, bytes, target).await;
        return None;
    }
    Some(Rewind::new(bytes, stream))
}

/// Serves one connection; `h2` is the ALPN choice on TLS (None: sniff the preface).
fn serve_conn<I>(
    proxy: &Arc<Proxy>,
    http: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    info: ConnInfo,
    h2: Option<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = proxy.clone();
    // HTTP/1 requests are numbered in arrival order, as `ClientIo` numbers their heads.
    let verdict = Arc::new(Verdict::default());
    let io = ClientIo::new(io, verdict.clone(), proxy.limits.header_read_timeout);
    let h1_requests = AtomicU64::new(0);
    let service = service_fn(move |mut req: Request<Incoming>| {
        let proxy = proxy.clone();
        if matches!(req.version(), Version::HTTP_10 | Version::HTTP_11)
            && verdict.smuggled(h1_requests.fetch_add(1, Ordering::Relaxed))
        {
            req.extensions_mut().insert(Smuggled);
        }
        super::request_id::ensure(req.headers_mut());
        // Boxed: hyper stores the service's future in the connection's state, and moving a
        // future of the whole request path there (several KiB) cost ~5% of the CPU. This is
        // the only box on the HTTP/1.1 pooled path: the forwarding future lives inline in
        // it (~6 KiB in all; boxing it too, behind a task-local for the connect time, made
        // it 10 KiB + 4 KiB and cost 3-4% of the proxy's CPU per keep-alive request).
        Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req, info).await) })
    });
    let builder = match h2 {
        Some(true) => http.clone().http2_only(),
        Some(false) => http.clone().http1_only(),
        None => http.clone(),
    };
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let conn = watcher.watch(conn);
    let peer = info.peer;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(%peer, error = %e, "connection ended with error");
        }
    });
}

/// The proxy's listening sockets, bound early (so `/readyz` and errors are honest) and
/// served later by [`Listeners::serve`].
pub struct Listeners {
    /// One socket per worker and address: [worker][http, https].
    sockets: Vec<Vec<std::net::TcpListener>>,
}

impl Listeners {
    /// Binds `workers` SO_REUSEPORT sockets on each address (`0` workers: one per CPU this
    /// process may run on).
    pub fn bind(http: SocketAddr, https: Option<SocketAddr>, workers: usize) -> io::Result<Self> {
        let workers = match workers {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut sockets = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut mine = vec![bind_reuseport(http)?];
            if let Some(addr) = https {
                mine.push(bind_reuseport(addr)?);
            }
            sockets.push(mine);
        }
        Ok(Self { sockets })
    }

    pub fn workers(&self) -> usize {
        self.sockets.len()
    }

    /// Starts the worker threads; `tls` serves the HTTPS sockets.
    pub fn serve(
        self,
        proxy: &Arc<Proxy>,
        tls: Option<TlsAcceptor>,
        shutdown: &watch::Receiver<bool>,
    ) -> io::Result<Serving> {
        let mut handles = Vec::new();
        for (i, mine) in self.sockets.into_iter().enumerate() {
            let specs: Vec<(std::net::TcpListener, Option<TlsAcceptor>)> = mine
                .into_iter()
                .enumerate()
                .map(|(k, s)| (s, if k == 1 { tls.clone() } else { None }))
                .collect();
            handles.push(spawn_worker(i, proxy.clone(), specs, shutdown.clone())?);
        }
        Ok(Serving { handles })
    }
}

/// Running proxy workers.
pub struct Serving {
    handles: Vec<thread::JoinHandle<()>>,
}

impl Serving {
    /// Waits for every worker to finish draining (after shutdown was signalled).
    pub async fn join(self) {
        let _ = tokio::task::spawn_blocking(move || {
            for h in self.handles {
                let _ = h.join();
            }
        })
        .await;
    }
}

fn spawn_worker(
    i: usize,
    proxy: Arc<Proxy>,
    specs: Vec<(std::net::TcpListener, Option<TlsAcceptor>)>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("proxy-{i}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "proxy worker: cannot start a runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (std_listener, tls) in specs {
                    let listener = match std_listener
                        .set_nonblocking(true)
                        .and_then(|()| TcpListener::from_std(std_listener))
                    {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "proxy worker: listener unusable");
                            continue;
                        }
                    };
                    tasks.push(tokio::spawn(serve(
                        proxy.clone(),
                        listener,
                        tls,
                        shutdown.clone(),
                    )));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
}
