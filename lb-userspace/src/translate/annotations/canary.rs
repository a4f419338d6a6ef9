//! Canary Ingresses: `canary`, `canary-weight`, `canary-weight-total`, `canary-by-header`,
//! `canary-by-header-value`, `canary-by-header-pattern`, `canary-by-cookie`.
//! Precedence: header > cookie > weight, as in ingress-nginx.
use super::Reader;

#[derive(Clone, Debug)]
pub struct CanaryPolicy {
    pub weight: u32,
    pub weight_total: u32,
    pub by_header: Option<http::HeaderName>,
    pub header_value: Option<String>,
    pub header_pattern: Option<regex::Regex>,
    pub by_cookie: Option<String>,
}

/// `None` unless `canary: "true"`.
pub fn parse(r: &Reader<'_>) -> Option<CanaryPolicy> {
    let enabled = r.bool("canary").unwrap_or(false);
    let weight = r.parse::<u32>("canary-weight", "a whole number");
    let weight_total = r.parse::<u32>("canary-weight-total", "a whole number");
    let by_header = r.get("canary-by-header");
    let header_value = r.get("canary-by-header-value");
    let header_pattern = r.get("canary-by-header-pattern");
    let by_cookie = r.get("canary-by-cookie");
    if !enabled {
        if weight.is_some() || by_header.is_some() || by_cookie.is_some() {
            r.warning(
                "canary",
                "canary-* annotations have no effect without canary: \"true\"",
            );
        }
        return None;
    }
    let weight_total = weight_total.unwrap_or(100);
    if weight_total == 0 {
        r.error("canary-weight-total", "must be greater than 0");
    }
    let weight = weight.unwrap_or(0);
    if weight > weight_total {
        r.error(
            "canary-weight",
            format!("{weight} exceeds canary-weight-total {weight_total}"),
        );
    }
    let by_header = by_header.and_then(|h| match http::HeaderName::from_bytes(h.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            r.error("canary-by-header", format!("{h:?} is not a header name"));
            None
        }
    });
    let header_pattern = header_pattern.and_then(|p| match regex::Regex::new(p) {
        Ok(re) => Some(re),
        Err(e) => {
            r.error("canary-by-header-pattern", format!("invalid regex: {e}"));
            None
        }
    });
    if (header_value.is_some() || header_pattern.is_some()) && by_header.is_none() {
        r.error(
            "canary-by-header",
            "required by canary-by-header-value / -pattern",
        );
    }
    Some(CanaryPolicy {
        weight,
        weight_total: weight_total.max(1),
        by_header,
        header_value: header_value.map(str::to_owned),
        header_pattern,
        by_cookie: by_cookie.map(str::to_owned),
    })
}

/// What a request says about the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forced to the canary (header/cookie says so).
    Canary,
    /// Forced away from the canary.
    Main,
    /// Nothing forced: the weight decides.
    Weight,
}

impl CanaryPolicy {
    /// Header, then cookie, as ingress-nginx: header value "always"/"never" (or the
    /// configured value / pattern), cookie value "always"/"never".
    pub fn decide(&self, headers: &http::HeaderMap) -> Decision {
        if let Some(name) = &self.by_header
            && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            if let Some(want) = &self.header_value {
                if v == want {
                    return Decision::Canary;
                }
            } else if let Some(re) = &self.header_pattern {
                if re.is_match(v) {
                    return Decision::Canary;
                }
            } else if v == "always" {
                return Decision::Canary;
            } else if v == "never" {
                return Decision::Main;
            }
        }
        if let Some(cookie) = &self.by_cookie {
            match cookie_value(headers, cookie) {
                Some("always") => return Decision::Canary,
                Some("never") => return Decision::Main,
                _ => {}
            }
        }
        Decision::Weight
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CanaryPolicy {
        CanaryPolicy {
            weight: 10,
            weight_total: 100,
            by_header: Some(http::HeaderName::from_static("x-canary")),
            header_value: None,
            header_pattern: None,
            by_cookie: Some("canary".into()),
        }
    }

    #[test]
    fn header_beats_cookie_beats_weight() {
        let p = policy();
        let mut h = http::HeaderMap::new();
        assert_eq!(p.decide(&h), Decision::Weight);
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=1; canary=always"),
        );
        assert_eq!(p.decide(&h), Decision::Canary);
        h.insert("x-canary", http::HeaderValue::from_static("never"));
        assert_eq!(p.decide(&h), Decision::Main);
        let with_value = CanaryPolicy {
            header_value: Some("v2".into()),
            ..policy()
        };
        h.insert("x-canary", http::HeaderValue::from_static("v2"));
        assert_eq!(with_value.decide(&h), Decision::Canary);
        h.insert("x-canary", http::HeaderValue::from_static("v3"));
        assert_eq!(
            with_value.decide(&h),
            Decision::Canary,
            "falls through to the cookie"
        );
        // canary-by-header-pattern: a match routes to the canary; no match (and no cookie)
        // leaves it to the weight, "never" included (only without value and pattern is
        // "never" a forced main).
        let with_pattern = CanaryPolicy {
            header_pattern: Some(regex::Regex::new("^(v2|v3)-.*$").expect("regex")),
            by_cookie: None,
            ..policy()
        };
        h.insert("x-canary", http::HeaderValue::from_static("v3-beta"));
        assert_eq!(with_pattern.decide(&h), Decision::Canary);
        for other in ["v4-beta", "never"] {
            h.insert("x-canary", http::HeaderValue::from_static(other));
            assert_eq!(with_pattern.decide(&h), Decision::Weight, "{other}");
        }
    }
}
