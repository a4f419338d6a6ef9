//! Source address filters: `whitelist-source-range`, `denylist-source-range` (403).
use std::net::IpAddr;

use ipnet::IpNet;

use super::Reader;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessPolicy {
    /// When non-empty, only these sources are served.
    pub allow: Vec<IpNet>,
    /// These sources are refused (checked first).
    pub deny: Vec<IpNet>,
}

pub fn parse(r: &Reader<'_>) -> AccessPolicy {
    AccessPolicy {
        allow: cidrs(r, "whitelist-source-range"),
        deny: cidrs(r, "denylist-source-range"),
    }
}

/// A comma-separated CIDR (or address) list; each bad entry is an error naming it.
pub fn cidrs(r: &Reader<'_>, name: &str) -> Vec<IpNet> {
    let Some(raw) = r.get(name) else {
        return Vec::new();
    };
    parse_cidr_list(raw).unwrap_or_else(|bad| {
        r.error(
            name,
            format!("{bad:?} is not a CIDR such as 198.18.0.0/15 or 2001:db8::/32"),
        );
        Vec::new()
    })
}

/// Parses `a/b, c, ...` (bare addresses are /32 or /128). `Err` names the first bad entry.
pub fn parse_cidr_list(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| s.to_owned())
        })
        .collect()
}

impl AccessPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 (from a dual-stack listener) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_deny() {
        let p = AccessPolicy {
            allow: parse_cidr_list("198.18.0.0/24, 2001:db8::/32").expect("list"),
            deny: parse_cidr_list("198.18.0.7").expect("list"),
        };
        assert!(p.allows("198.18.0.1".parse().expect("ip")));
        assert!(!p.allows("198.18.0.7".parse().expect("ip")));
        assert!(!p.allows("198.18.1.1".parse().expect("ip")));
        assert!(p.allows("::ffff:198.18.0.2".parse().expect("ip")));
        assert!(p.allows("2001:db8::1".parse().expect("ip")));
        assert_eq!(parse_cidr_list("10.0.0.0/8, nope"), Err("nope".to_owned()));
    }
}
