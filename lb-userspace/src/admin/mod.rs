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

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::{
    metrics::Metrics,
    proxy::{Body, local},
    routes::RouteStore,
};

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

/// What the admin endpoints read.
#[derive(Clone)]
pub struct State {
    pub ready: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub routes: Arc<RouteStore>,
}

pub async fn serve(listener: TcpListener, state: State, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req.uri().path(), &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(path: &str, state: &State) -> Response<Body> {
    match path {
        "/healthz" => local(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.is_ready() => local(StatusCode::OK, "ready\n"),
        "/readyz" => local(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => text(
            state.metrics.encode(),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ),
        "/debug/routes" => text(debug_routes(&state.routes), "application/json"),
        _ => local(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// The live route table as JSON.
pub fn debug_routes(routes: &RouteStore) -> String {
    let table = routes.load();
    let rows: Vec<serde_json::Value> = table
        .rows()
        .into_iter()
        .map(|(host, r)| {
            serde_json::json!({
                "host": host,
                "path": r.path,
                "pathType": r.path_type.to_string(),
                "ingress": r.ingress.to_string(),
                "backend": r.backend.to_string(),
                "endpoints": r.backend.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "canaries": r.canaries.iter().map(|c| serde_json::json!({
                    "ingress": c.ingress.to_string(),
                    "backend": c.backend.to_string(),
                    "weight": c.rule.weight,
                    "weightTotal": c.rule.weight_total,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_needs_config_listeners_and_dataplane() {
        let state = State {
            ready: Arc::new(Readiness::default()),
            metrics: Arc::new(Metrics::new()),
            routes: Arc::new(RouteStore::default()),
        };
        assert_eq!(route("/healthz", &state).status(), StatusCode::OK);
        assert_eq!(
            route("/readyz", &state).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.ready.config_loaded.store(true, Ordering::Release);
        state.ready.listeners_bound.store(true, Ordering::Release);
        assert_eq!(
            route("/readyz", &state).status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "XDP not attached yet"
        );
        state.ready.dataplane_ready.store(true, Ordering::Release);
        assert_eq!(route("/readyz", &state).status(), StatusCode::OK);
        assert_eq!(route("/metrics", &state).status(), StatusCode::OK);
        assert_eq!(route("/debug/routes", &state).status(), StatusCode::OK);
        assert_eq!(route("/nope", &state).status(), StatusCode::NOT_FOUND);
    }
}
