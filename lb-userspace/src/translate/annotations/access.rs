//! Source address filters: `whitelist-source-range`, `denylist-source-range` (403), and
//! `satisfy` (whether an allowed address is enough when the Ingress also asks for
//! authentication).
use std::net::IpAddr;

use ipnet::IpNet;

use super::Reader;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessPolicy {
    /// When non-empty, only these sources are served.
    pub allow: Vec<IpNet>,
    /// These sources are refused (checked first).
    pub deny: Vec<IpNet>,
    /// `satisfy: any` (nginx's `satisfy any`): with authentication configured, a source the
    /// allow list names (and the deny list does not) gets in without credentials, and any
    /// other source gets in with them; `all` (the default): both are required.
    pub satisfy_any: bool,
}

pub fn parse(r: &Reader<'_>) -> AccessPolicy {
    let satisfy_any = match r.get("satisfy") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("all") => false,
        Some(v) if v.eq_ignore_ascii_case("any") => true,
        Some(v) => {
            r.error("satisfy", format!("{v:?} is not any or all"));
            false
        }
    };
    AccessPolicy {
        allow: cidrs(r, "whitelist-source-range"),
        deny: cidrs(r, "denylist-source-range"),
        satisfy_any,
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

    /// Whether a rule names the source as allowed: the allow list is not empty and holds
    /// it, and the deny list does not (an empty allow list lets everyone in, but names
    /// nobody: under `satisfy any` it lets no one past authentication, as in nginx).
    pub fn names_allowed(&self, ip: IpAddr) -> bool {
        !self.allow.is_empty() && self.allows(ip)
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
            satisfy_any: false,
        };
        assert!(p.allows("198.18.0.1".parse().expect("ip")));
        assert!(!p.allows("198.18.0.7".parse().expect("ip")));
        assert!(!p.allows("198.18.1.1".parse().expect("ip")));
        assert!(p.allows("::ffff:198.18.0.2".parse().expect("ip")));
        assert!(p.allows("2001:db8::1".parse().expect("ip")));
        assert_eq!(parse_cidr_list("10.0.0.0/8, nope"), Err("nope".to_owned()));
        assert!(p.names_allowed("198.18.0.1".parse().expect("ip")));
        assert!(!p.names_allowed("198.18.0.7".parse().expect("ip")));
        assert!(!AccessPolicy::default().names_allowed("198.18.0.1".parse().expect("ip")));
    }

    #[test]
    fn satisfy_any_all_or_an_error() {
        use crate::translate::annotations::parse_nginx;
        assert!(!parse_nginx(&[]).0.access.satisfy_any);
        assert!(!parse_nginx(&[("satisfy", "all")]).0.access.satisfy_any);
        assert!(parse_nginx(&[("satisfy", "Any")]).0.access.satisfy_any);
        let (_, diags) = parse_nginx(&[("satisfy", "some")]);
        assert!(
            diags[0].to_string().contains(
                "annotations[nginx.ingress.kubernetes.io/satisfy]: \"some\" is not any or all"
            ),
            "{diags:?}"
        );
    }
}
