//! CORS: `enable-cors`, `cors-allow-origin`, `cors-allow-methods`, `cors-allow-headers`,
//! `cors-expose-headers`, `cors-allow-credentials`, `cors-max-age` (ingress-nginx defaults).
use super::Reader;

#[derive(Clone, Debug, PartialEq)]
pub struct CorsPolicy {
    /// Allowed origins; `*` alone allows any; `https://*.example.com` one label wildcard.
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub expose_headers: String,
    pub credentials: bool,
    pub max_age: u32,
}

pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";

/// `None` unless `enable-cors: "true"`. Setting cors-* without enabling it is a warning.
pub fn parse(r: &Reader<'_>) -> Option<CorsPolicy> {
    let enabled = r.bool("enable-cors").unwrap_or(false);
    let origins = r.get("cors-allow-origin");
    let methods = r.get("cors-allow-methods");
    let headers = r.get("cors-allow-headers");
    let expose = r.get("cors-expose-headers");
    let credentials = r.bool("cors-allow-credentials");
    let max_age = r.parse::<u32>("cors-max-age", "a number of seconds");
    if !enabled {
        if origins.is_some() {
            r.warning(
                "cors-allow-origin",
                "has no effect without enable-cors: \"true\"",
            );
        }
        return None;
    }
    let origins: Vec<String> = origins
        .unwrap_or("*")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for o in &origins {
        let ok = o == "*"
            || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/'));
        if !ok {
            r.error(
                "cors-allow-origin",
                format!("{o:?} is not \"*\" or an origin like https://app.example.com"),
            );
        }
    }
    for (name, value) in [
        ("cors-allow-methods", methods),
        ("cors-allow-headers", headers),
        ("cors-expose-headers", expose),
    ] {
        if let Some(v) = value
            && !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | ' ' | '-' | '_' | '*'))
        {
            r.error(
                name,
                format!("{v:?} must be a comma-separated list of tokens"),
            );
        }
    }
    Some(CorsPolicy {
        origins,
        methods: methods.unwrap_or(DEFAULT_METHODS).to_owned(),
        headers: headers.unwrap_or(DEFAULT_HEADERS).to_owned(),
        expose_headers: expose.unwrap_or("").to_owned(),
        credentials: credentials.unwrap_or(true),
        max_age: max_age.unwrap_or(1_728_000),
    })
}

impl CorsPolicy {
    /// The value for Access-Control-Allow-Origin, or `None` when `origin` is not allowed.
    pub fn allow_origin(&self, origin: Option<&str>) -> Option<String> {
        if self.origins.iter().any(|o| o == "*") {
            // With credentials, browsers reject "*": echo the origin as ingress-nginx does.
            return Some(match (self.credentials, origin) {
                (true, Some(o)) => o.to_owned(),
                _ => "*".to_owned(),
            });
        }
        let origin = origin?;
        self.origins
            .iter()
            .any(|allowed| origin_matches(allowed, origin))
            .then(|| origin.to_owned())
    }
}

fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed.eq_ignore_ascii_case(origin) {
        return true;
    }
    // https://*.example.com matches https://a.example.com (one label).
    let Some((scheme, rest)) = allowed.split_once("://*.") else {
        return false;
    };
    let Some(host) = origin
        .strip_prefix(scheme)
        .and_then(|o| o.strip_prefix("://"))
    else {
        return false;
    };
    match host.split_once('.') {
        Some((label, suffix)) => !label.is_empty() && suffix.eq_ignore_ascii_case(rest),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let p = CorsPolicy {
            origins: vec![
                "https://app.example.com".into(),
                "https://*.ml.example.com".into(),
            ],
            methods: DEFAULT_METHODS.into(),
            headers: DEFAULT_HEADERS.into(),
            expose_headers: String::new(),
            credentials: true,
            max_age: 1,
        };
        assert_eq!(
            p.allow_origin(Some("https://app.example.com")).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            p.allow_origin(Some("https://a.ml.example.com")).as_deref(),
            Some("https://a.ml.example.com")
        );
        assert_eq!(p.allow_origin(Some("https://a.b.ml.example.com")), None);
        assert_eq!(p.allow_origin(Some("http://app.example.com")), None);
        assert_eq!(p.allow_origin(None), None);
        let star = CorsPolicy {
            origins: vec!["*".into()],
            credentials: false,
            ..p
        };
        assert_eq!(star.allow_origin(Some("https://x")).as_deref(), Some("*"));
    }
}
