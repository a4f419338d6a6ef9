//! The kernel policy from ConfigMap `ebpf-lb` (keys named in `shared/design.md`): source
//! ACLs, per-source rate limits, the penalty duration and the SYN-cookie threshold.
//!
//! Parsing is pure. A bad value is reported with the ConfigMap and key it came from and
//! leaves that key at its default (off / empty); the other keys still apply.
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use k8s_openapi::api::core::v1::ConfigMap;
use lb_common::Config;

/// Name of the controller's ConfigMap.
pub const CONFIGMAP: &str = "ebpf-lb";

/// Default idle timeout of UDP flows in `FLOWS`.
pub const UDP_FLOW_TIMEOUT_NS: u64 = 30_000_000_000;

/// A source prefix of an ACL (host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self::new(addr, prefix))
    }
}

impl Cidr {
    /// The prefix with host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self { addr, prefix }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the kernel enforces. `Default` is "nothing": no ACL, no limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelPolicy {
    /// `denylist-source-range`.
    pub deny: Vec<Cidr>,
    /// `allowlist-source-range` (empty: every source allowed).
    pub allow: Vec<Cidr>,
    /// `xdp-conn-rate`: new connections per second per source (0 = off).
    pub conn_rate: u32,
    /// `xdp-conn-burst` (0 with a rate: one second's worth).
    pub conn_burst: u32,
    /// `xdp-pps`: packets per second per source (0 = off).
    pub pps: u32,
    /// `xdp-pps-burst` (0 with a rate: one second's worth).
    pub pps_burst: u32,
    /// `penalty-seconds`: how long a reported source stays in `PENALTY`.
    pub penalty_seconds: u32,
    /// `syn-cookie-threshold`: SYNs/s per VIP above which SYN cookies answer (0 = off).
    pub syn_cookie_threshold: u32,
}

/// A ConfigMap key that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ConfigMap {configmap}: key {key}: {message}")]
pub struct PolicyError {
    /// `namespace/name`.
    pub configmap: String,
    pub key: &'static str,
    pub message: String,
}

/// Every key this module reads.
pub const KEYS: [&str; 8] = [
    "denylist-source-range",
    "allowlist-source-range",
    "xdp-conn-rate",
    "xdp-conn-burst",
    "xdp-pps",
    "xdp-pps-burst",
    "penalty-seconds",
    "syn-cookie-threshold",
];

/// Finds ConfigMap `ebpf-lb` in `namespace` among `config_maps` and parses it (no
/// ConfigMap: the default policy, no errors).
pub fn from_config_maps(
    config_maps: &[ConfigMap],
    namespace: &str,
) -> (KernelPolicy, Vec<PolicyError>) {
    let found = config_maps.iter().find(|cm| {
        cm.metadata.name.as_deref() == Some(CONFIGMAP)
            && cm.metadata.namespace.as_deref().unwrap_or("default") == namespace
    });
    match found.and_then(|cm| cm.data.as_ref()) {
        Some(data) => parse(&format!("{namespace}/{CONFIGMAP}"), data),
        None => (KernelPolicy::default(), Vec::new()),
    }
}

/// Parses the kernel-policy keys of a ConfigMap's `data` (other keys are ignored: they
/// belong to the L7 side). `configmap` is `namespace/name`, for the errors.
pub fn parse(configmap: &str, data: &BTreeMap<String, String>) -> (KernelPolicy, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut err = |key: &'static str, message: String| {
        errors.push(PolicyError {
            configmap: configmap.to_owned(),
            key,
            message,
        })
    };
    let mut p = KernelPolicy::default();
    for key in KEYS {
        let Some(value) = data.get(key) else { continue };
        let value = value.trim();
        match key {
            "denylist-source-range" | "allowlist-source-range" => match cidrs(value) {
                Ok(list) if key.starts_with("deny") => p.deny = list,
                Ok(list) => p.allow = list,
                Err(m) => err(key, m),
            },
            _ => match value.parse::<u32>() {
                Ok(n) => match key {
                    "xdp-conn-rate" => p.conn_rate = n,
                    "xdp-conn-burst" => p.conn_burst = n,
                    "xdp-pps" => p.pps = n,
                    "xdp-pps-burst" => p.pps_burst = n,
                    "penalty-seconds" => p.penalty_seconds = n,
                    _ => p.syn_cookie_threshold = n,
                },
                Err(_) => err(
                    key,
                    format!("{value:?} is not a whole number between 0 and {}", u32::MAX),
                ),
            },
        }
    }
    if p.conn_rate == 0 && p.conn_burst != 0 {
        err(
            "xdp-conn-burst",
            "has no effect without xdp-conn-rate".into(),
        );
    }
    if p.pps == 0 && p.pps_burst != 0 {
        err("xdp-pps-burst", "has no effect without xdp-pps".into());
    }
    (p, errors)
}

fn cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(item.parse()?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// GCRA parameters for `rate` per second with `burst` (0: one second's worth).
fn bucket(rate: u32, burst: u32) -> (u64, u64) {
    if rate == 0 {
        return (0, 0);
    }
    let interval = (1_000_000_000 / u64::from(rate)).max(1);
    let burst = if burst == 0 { rate } else { burst };
    (interval, interval * u64::from(burst))
}

/// The kernel counts SYNs per CPU (lock-free), so each CPU gets its share of the
/// per-VIP threshold, rounded up (never 0 unless off).
fn per_cpu_threshold(threshold: u32, cpus: usize) -> u32 {
    if threshold == 0 {
        return 0;
    }
    let cpus = u32::try_from(cpus.max(1)).unwrap_or(u32::MAX);
    threshold.div_ceil(cpus)
}

impl KernelPolicy {
    /// Writes the policy's part of `CONFIG` into `cfg` (steering fields untouched).
    pub fn apply_to(&self, cfg: &mut Config) {
        (cfg.conn_interval_ns, cfg.conn_burst_ns) = bucket(self.conn_rate, self.conn_burst);
        (cfg.pps_interval_ns, cfg.pps_burst_ns) = bucket(self.pps, self.pps_burst);
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1));
        cfg.syn_cookie_threshold = per_cpu_threshold(self.syn_cookie_threshold, cpus);
        cfg.udp_flow_timeout_ns = UDP_FLOW_TIMEOUT_NS;
        let count = |v4: bool| {
            let n = self.allow.iter().filter(|c| c.addr.is_ipv4() == v4).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        cfg.allow_v4 = count(true);
        cfg.allow_v6 = count(false);
        let count = |v4: bool| {
            let n = self.deny.iter().filter(|c| c.addr.is_ipv4() == v4).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        cfg.deny_v4 = count(true);
        cfg.deny_v6 = count(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_cookie_threshold_is_shared_out_per_cpu() {
        assert_eq!(per_cpu_threshold(0, 4), 0);
        assert_eq!(per_cpu_threshold(1, 4), 1);
        assert_eq!(per_cpu_threshold(5000, 2), 2500);
        assert_eq!(per_cpu_threshold(5001, 2), 2501);
        assert_eq!(per_cpu_threshold(7, 0), 7);
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_key_parses() {
        let (p, errors) = parse(
            "ebpf-lb/ebpf-lb",
            &data(&[
                (
                    "denylist-source-range",
                    "198.18.5.0/24, 2001:2::/48,198.18.9.9",
                ),
                ("allowlist-source-range", "198.18.0.0/15"),
                ("xdp-conn-rate", "100"),
                ("xdp-conn-burst", "20"),
                ("xdp-pps", "10000"),
                ("xdp-pps-burst", "0"),
                ("penalty-seconds", "60"),
                ("syn-cookie-threshold", "5000"),
                ("proxy-body-size", "8m"),
            ]),
        );
        assert_eq!(errors, []);
        let cidr = |s: &str| s.parse::<Cidr>().expect("cidr");
        assert_eq!(
            p.deny,
            [
                cidr("198.18.5.0/24"),
                cidr("198.18.9.9/32"),
                cidr("2001:2::/48")
            ]
        );
        assert_eq!(p.allow, [cidr("198.18.0.0/15")]);
        assert_eq!(
            (p.conn_rate, p.conn_burst, p.pps, p.pps_burst),
            (100, 20, 10000, 0)
        );
        assert_eq!((p.penalty_seconds, p.syn_cookie_threshold), (60, 5000));

        let mut cfg = Config::default();
        p.apply_to(&mut cfg);
        assert_eq!(cfg.conn_interval_ns, 10_000_000);
        assert_eq!(cfg.conn_burst_ns, 200_000_000);
        assert_eq!(cfg.pps_interval_ns, 100_000);
        assert_eq!(
            cfg.pps_burst_ns, 1_000_000_000,
            "burst 0 = one second's worth"
        );
        assert_eq!((cfg.allow_v4, cfg.allow_v6), (1, 0));
    }

    #[test]
    fn errors_name_the_configmap_and_key_and_leave_the_key_off() {
        let (p, errors) = parse(
            "lb/ebpf-lb",
            &data(&[
                ("denylist-source-range", "198.18.0.0/33"),
                ("allowlist-source-range", "not-an-ip"),
                ("xdp-conn-rate", "-1"),
                ("xdp-pps", "ten"),
                ("xdp-pps-burst", "5"),
                ("penalty-seconds", "30"),
            ]),
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "ConfigMap lb/ebpf-lb: key denylist-source-range: \"198.18.0.0/33\": prefix length must be 0..=32",
                "ConfigMap lb/ebpf-lb: key allowlist-source-range: \"not-an-ip\" is not an IP address or CIDR",
                "ConfigMap lb/ebpf-lb: key xdp-conn-rate: \"-1\" is not a whole number between 0 and 4294967295",
                "ConfigMap lb/ebpf-lb: key xdp-pps: \"ten\" is not a whole number between 0 and 4294967295",
                "ConfigMap lb/ebpf-lb: key xdp-pps-burst: has no effect without xdp-pps",
            ]
        );
        assert!(p.deny.is_empty() && p.allow.is_empty());
        assert_eq!((p.conn_rate, p.pps, p.penalty_seconds), (0, 0, 30));
    }

    #[test]
    fn cidrs_clear_host_bits() {
        assert_eq!(
            "198.18.7.9/16".parse::<Cidr>().expect("cidr").to_string(),
            "198.18.0.0/16"
        );
        assert_eq!("::/0".parse::<Cidr>().expect("cidr").to_string(), "::/0");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().expect("cidr").to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "2001:2::1".parse::<Cidr>().expect("cidr").to_string(),
            "2001:2::1/128"
        );
    }

    #[test]
    fn configmap_found_by_namespace_and_name() {
        let cm = |ns: &str, name: &str, rate: &str| ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(data(&[("xdp-conn-rate", rate)])),
            ..Default::default()
        };
        let maps = [
            cm("other", CONFIGMAP, "1"),
            cm("lb", "x", "2"),
            cm("lb", CONFIGMAP, "3"),
        ];
        assert_eq!(from_config_maps(&maps, "lb").0.conn_rate, 3);
        assert_eq!(from_config_maps(&maps, "none").0, KernelPolicy::default());
    }
}
