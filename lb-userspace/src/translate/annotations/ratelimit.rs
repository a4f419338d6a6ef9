//! L7 rate limits per Ingress per client address: `limit-rps`, `limit-rpm`,
//! `limit-connections`, `limit-burst-multiplier`, `limit-whitelist`; and the bandwidth of
//! each response: `limit-rate`, `limit-rate-after`.
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

/// `limit-rate` / `limit-rate-after` (nginx's `limit_rate` and `limit_rate_after`, in
/// kilobytes as ingress-nginx writes them): each response is sent at most `bytes_per_sec`
/// once its first `after` bytes went (see `policy::throttle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseRate {
    pub bytes_per_sec: u64,
    pub after: u64,
}

pub fn response_rate(r: &Reader<'_>) -> Option<ResponseRate> {
    let rate = r.parse::<u64>("limit-rate", "a whole number of kilobytes per second");
    let after = r.parse::<u64>("limit-rate-after", "a whole number of kilobytes");
    match rate {
        Some(k) if k > 0 => Some(ResponseRate {
            bytes_per_sec: k.saturating_mul(1024),
            after: after.unwrap_or(0).saturating_mul(1024),
        }),
        _ => {
            if after.is_some() {
                r.warning("limit-rate-after", "has no effect without limit-rate");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{diagnostics::Severity, translate::annotations::parse_nginx};

    #[test]
    fn response_rate_in_kilobytes() {
        let (p, d) = parse_nginx(&[("limit-rate", "100"), ("limit-rate-after", "512")]);
        assert!(d.is_empty(), "{d:?}");
        let r = p.response_rate.expect("rate");
        assert_eq!((r.bytes_per_sec, r.after), (102_400, 524_288));
        let (p, d) = parse_nginx(&[("limit-rate", "0")]);
        assert!(
            p.response_rate.is_none() && d.is_empty(),
            "0: no limit, as nginx"
        );
        let (p, d) = parse_nginx(&[("limit-rate-after", "10")]);
        assert!(p.response_rate.is_none());
        assert!(
            d[0].to_string()
                .contains("has no effect without limit-rate"),
            "{d:?}"
        );
        let (_, d) = parse_nginx(&[("limit-rate", "fast")]);
        assert!(
            d.iter().any(|d| d.severity == Severity::Error
                && d.to_string()
                    .contains("limit-rate]: \"fast\" is not a whole number")),
            "{d:?}"
        );
    }

    fn parse(pairs: &[(&str, &str)]) -> (Option<super::RateLimitPolicy>, Vec<String>) {
        let (p, d) = parse_nginx(pairs);
        let errors = d
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        (p.rate_limit, errors)
    }

    #[test]
    fn rates_bursts_connections_and_whitelist() {
        assert_eq!(parse(&[]).0, None);
        // limit-rpm alone: per second; burst = rate x 5 (ingress-nginx's multiplier).
        let p = parse(&[("limit-rpm", "120")]).0.expect("policy");
        assert_eq!((p.rate_per_sec, p.burst), (Some(2.0), 10.0));
        // Both: the stricter; an explicit multiplier.
        let (p, e) = parse(&[
            ("limit-rps", "5"),
            ("limit-rpm", "60"),
            ("limit-burst-multiplier", "3"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        let p = p.expect("policy");
        assert_eq!((p.rate_per_sec, p.burst), (Some(1.0), 3.0));
        // A slow rate still allows one request at once.
        let p = parse(&[("limit-rpm", "6")]).0.expect("policy");
        assert_eq!(p.burst, 1.0);
        // Connections only; whitelist of ranges.
        let p = parse(&[
            ("limit-connections", "3"),
            ("limit-whitelist", "198.18.0.0/24, 2001:db8::1"),
        ])
        .0
        .expect("policy");
        assert_eq!((p.rate_per_sec, p.connections), (None, Some(3)));
        assert_eq!(p.whitelist.len(), 2);
        // Zero is refused, naming the annotation.
        let (_, e) = parse(&[("limit-rps", "0")]);
        assert!(
            e.iter()
                .any(|e| e.contains("limit-rps") && e.contains("greater than 0")),
            "{e:?}"
        );
        let (_, e) = parse(&[("limit-rpm", "many")]);
        assert!(e.iter().any(|e| e.contains("limit-rpm")), "{e:?}");
    }
}
