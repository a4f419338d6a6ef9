//! `l7-load`: an open-loop HTTP/1.1 load generator for `cargo xtask bench l7`'s latency
//! figures. Requests are scheduled at a fixed rate (`--rate` per second, spread over
//! `--connections` keep-alive connections, round robin); a request sent late because its
//! connection was still waiting for an earlier response is measured from its *scheduled*
//! start, so a proxy that stalls is charged for the requests that queued behind the stall
//! (latency correction, as oha -q or wrk2 do).
//! Prints one JSON object: achieved rate, errors, p50/p99/p99.9/max in milliseconds.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// Target address (HTTP/1.1, cleartext), e.g. 127.0.0.1:19003.
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second.
    #[arg(long)]
    rate: u32,
    /// Duration of the run in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

/// Which requests of the schedule one connection sends: `index`, `index + connections`, ...
/// of `total`, request i due at `start + i / rate` seconds.
#[derive(Clone, Copy)]
struct Share {
    addr: SocketAddr,
    index: u32,
    connections: u32,
    rate: u64,
    total: u64,
}

/// Latencies (microseconds from the scheduled start) and errors of one connection.
async fn connection(share: Share, start: tokio::time::Instant) -> Result<(Vec<u32>, u64)> {
    let Share {
        addr,
        index,
        connections,
        rate,
        total,
    } = share;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity((total / u64::from(connections)) as usize + 1);
    let mut errors = 0u64;
    let mut i = u64::from(index);
    while i < total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        // On schedule: wait, and measure from when the request really goes out (tokio's
        // timer wakes up to 1 ms late; that is the generator's delay, not the proxy's).
        // Behind schedule (the previous response came late): measure from the due time,
        // so the proxy is charged for the queueing it caused.
        let now = tokio::time::Instant::now();
        let due = if now < due {
            tokio::time::sleep_until(due).await;
            tokio::time::Instant::now()
        } else {
            due
        };
        let req = http::Request::get("/")
            .header(http::header::HOST, "bench.test")
            .body(Empty::<Bytes>::new())?;
        match sender.send_request(req).await {
            Ok(resp) if resp.status().is_success() => {
                if resp.into_body().collect().await.is_err() {
                    errors += 1;
                }
            }
            _ => errors += 1,
        }
        let took = tokio::time::Instant::now().saturating_duration_since(due);
        lat.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        i += u64::from(connections);
    }
    Ok((lat, errors))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate == 0 || args.connections == 0 || args.seconds == 0 {
        bail!("--rate, --connections and --seconds must be positive");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let per_second = u64::from(args.rate);
    let total = per_second * u64::from(args.seconds);
    let wall = Instant::now();
    let (mut all, errors) = rt.block_on(async {
        // A short head start so every connection is up before the first request is due.
        let start = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut tasks = Vec::new();
        for k in 0..args.connections {
            let share = Share {
                addr: args.addr,
                index: k,
                connections: args.connections,
                rate: per_second,
                total,
            };
            tasks.push(tokio::spawn(connection(share, start)));
        }
        let mut all = Vec::with_capacity(total as usize);
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.context("connection task")??;
            all.extend(lat);
            errors += e;
        }
        Ok::<_, anyhow::Error>((all, errors))
    })?;
    let elapsed = wall.elapsed().as_secs_f64() - 0.2;
    all.sort_unstable();
    let out = serde_json::json!({
        "rate": args.rate,
        "requests": all.len(),
        "errors": errors,
        "achieved_rps": all.len() as f64 / elapsed.max(1e-9),
        "p50_ms": percentile(&all, 0.50),
        "p99_ms": percentile(&all, 0.99),
        "p999_ms": percentile(&all, 0.999),
        "max_ms": percentile(&all, 1.0),
    });
    println!("{out}");
    Ok(())
}
