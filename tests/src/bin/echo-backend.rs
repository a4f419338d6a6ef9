//! A small HTTP server standing in for a model server or MLflow in tests and the demo:
//! answers every request with JSON describing what it received.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Name reported in every answer.
    #[arg(long)]
    name: String,
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "host": header("host"),
        "x_forwarded_for": header("x-forwarded-for"),
        "x_real_ip": header("x-real-ip"),
        "x_forwarded_proto": header("x-forwarded-proto"),
        "x_forwarded_prefix": header("x-forwarded-prefix"),
        "seldon_model": header("seldon-model"),
        "x_auth_user": header("x-auth-user"),
        "authorization": header("authorization"),
        "x_code": header("x-code"),
        "x_original_uri": header("x-original-uri"),
        "x_service_name": header("x-service-name"),
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    // `?status=NNN` answers with that status (auth-service and error tests).
    let status = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| hyper::StatusCode::from_u16(s).ok());
    if let Some(status) = status {
        *resp.status_mut() = status;
    }
    // `?location=URL` (after any other parameter) sets a Location header (redirect tests).
    if let Some(location) = req
        .uri()
        .query()
        .and_then(|q| q.split_once("location=").map(|(_, l)| l))
        .and_then(|l| hyper::header::HeaderValue::from_str(l).ok())
    {
        resp.headers_mut().insert("location", location);
    }
    // `?set-cookie=VALUE` (percent-encoded; repeatable) adds a Set-Cookie header each.
    for cookie in req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.strip_prefix("set-cookie="))
        .filter_map(|v| hyper::header::HeaderValue::from_bytes(&percent_decode(v)).ok())
    {
        resp.headers_mut().append("set-cookie", cookie);
    }
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `%XX` escapes decoded (anything malformed kept as it is).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let name: Arc<str> = args.name.into();
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(answer(&name, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
