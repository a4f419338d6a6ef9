//! Host matching per the Ingress v1 spec: exact hosts, and `*.` wildcards that cover exactly
//! one DNS label (`*.foo.com` matches `bar.foo.com`, not `foo.com` nor `a.bar.foo.com`).
//! An exact host beats a wildcard.
use std::collections::HashMap;

/// Hosts compiled for lookup; `T` is what a host yields (its path matcher).
#[derive(Debug)]
pub struct HostMatcher<T> {
    exact: HashMap<String, T>,
    /// Keyed by the wildcard's suffix without `*.` (`foo.com` for `*.foo.com`).
    wildcard: HashMap<String, T>,
}

impl<T> Default for HostMatcher<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T: Default> HostMatcher<T> {
    /// The entry for a rule host (`*.foo.com` or `foo.com`), created empty when new.
    pub fn entry(&mut self, host: &str) -> &mut T {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.entry(suffix.to_owned()).or_default(),
            None => self.exact.entry(host).or_default(),
        }
    }
}

impl<T> HostMatcher<T> {
    /// Whether `host` (lower-case) is a rule host itself, not only covered by a wildcard.
    pub fn has_exact(&self, host: &str) -> bool {
        self.exact.contains_key(host)
    }

    /// The entry for a request host (already lower-case, without port).
    pub fn lookup(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        let (_, suffix) = host.split_once('.')?;
        self.wildcard.get(suffix)
    }

    pub fn iter(&self) -> impl Iterator<Item = (String, &T)> {
        self.exact
            .iter()
            .map(|(h, v)| (h.clone(), v))
            .chain(self.wildcard.iter().map(|(h, v)| (format!("*.{h}"), v)))
    }
}

/// The host of a request: the `Host` header (or URI authority), lower-cased, without port.
/// IPv6 literals keep their brackets.
pub fn request_host(raw: &str) -> String {
    let host = if raw.starts_with('[') {
        match raw.find(']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_wildcard_rules() {
        let mut m: HostMatcher<&str> = HostMatcher::default();
        *m.entry("foo.bar.com") = "exact";
        *m.entry("*.bar.com") = "wild";
        *m.entry("*.foo.com") = "wildfoo";
        // Rows from the Kubernetes documentation's host wildcard table.
        assert_eq!(m.lookup("foo.bar.com"), Some(&"exact"));
        assert_eq!(m.lookup("bar.bar.com"), Some(&"wild"));
        assert_eq!(
            m.lookup("baz.bar.foo.com"),
            None,
            "wildcard covers one label only"
        );
        assert_eq!(m.lookup("foo.com"), None, "wildcard needs a label");
        assert_eq!(m.lookup("bar.foo.com"), Some(&"wildfoo"));
        assert_eq!(m.lookup("other.org"), None);
    }

    #[test]
    fn request_host_forms() {
        assert_eq!(request_host("Example.COM:8080"), "example.com");
        assert_eq!(request_host("example.com."), "example.com");
        assert_eq!(request_host("[::1]:80"), "[::1]");
        assert_eq!(request_host("198.18.0.210"), "198.18.0.210");
    }
}
