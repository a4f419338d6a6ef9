//! L7 rate limits per Ingress per client address: `limit-rps`, `limit-rpm`,
//! `limit-connections`, `limit-burst-multiplier`, `limit-whitelist`.
use ipnet::IpNet;

use super::{Reader, access};

#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitPolicy {
    /// Requests per second per client (from limit-rps, or limit-rpm / 60).
    pub rate_per_sec: Option<f64>,
    /// Bucket size: rate x limit-burst-multiplier (default 5, as ingress-nginx).
    pub burst: f64,
    /// Concurrent connections per client.
    pub connections: Option<u32>,
    /// Sources never limited.
    pub whitelist: Vec<IpNet>,
}

pub fn parse(r: &Reader<'_>) -> Option<RateLimitPolicy> {
    let rps = r.parse::<u32>("limit-rps", "a whole number of requests per second");
    let rpm = r.parse::<u32>("limit-rpm", "a whole number of requests per minute");
    let connections = r.parse::<u32>("limit-connections", "a whole number of connections");
    let multiplier = r
        .parse::<u32>("limit-burst-multiplier", "a whole number")
        .unwrap_or(5);
    let whitelist = access::cidrs(r, "limit-whitelist");
    // limit-rps wins over limit-rpm when both are set (the stricter of nginx's two zones
    // is what a client sees first).
    let rate_per_sec = match (rps, rpm) {
        (Some(0), _) | (_, Some(0)) => {
            r.error(
                if rps == Some(0) {
                    "limit-rps"
                } else {
                    "limit-rpm"
                },
                "must be greater than 0",
            );
            None
        }
        (Some(rps), Some(rpm)) => Some(f64::from(rps).min(f64::from(rpm) / 60.0)),
        (Some(rps), None) => Some(f64::from(rps)),
        (None, Some(rpm)) => Some(f64::from(rpm) / 60.0),
        (None, None) => None,
    };
    if rate_per_sec.is_none() && connections.is_none() {
        return None;
    }
    let burst = rate_per_sec.map_or(0.0, |r| (r * f64::from(multiplier.max(1))).max(1.0));
    Some(RateLimitPolicy {
        rate_per_sec,
        burst,
        connections,
        whitelist,
    })
}
