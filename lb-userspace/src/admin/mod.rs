//! The admin listener: `/healthz` (the process is alive) and `/readyz` (configuration
//! loaded, listeners bound, XDP attached when asked for).
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{Request, Response, StatusCode};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::proxy::{Body, local};

/// What `/readyz` reports. Each part is set once by the component that owns it.
#[derive(Debug, Default)]
pub struct Readiness {
    pub config_loaded: AtomicBool,
    pub listeners_bound: AtomicBool,
    /// True when XDP is attached, or when no `--iface` was given.
    pub dataplane_ready: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.config_loaded.load(Ordering::Acquire)
            && self.listeners_bound.load(Ordering::Acquire)
            && self.dataplane_ready.load(Ordering::Acquire)
    }
}

pub async fn serve(
    listener: TcpListener,
    ready: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ready = ready.clone();
                async move { Ok::<_, Infallible>(route(req.uri().path(), &ready)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(path: &str, ready: &Readiness) -> Response<Body> {
    match path {
        "/healthz" => local(StatusCode::OK, "ok\n"),
        "/readyz" if ready.is_ready() => local(StatusCode::OK, "ready\n"),
        "/readyz" => local(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => local(StatusCode::NOT_FOUND, "not found\n"),
    }
}
