//! Path rewriting and regex paths: `rewrite-target`, `use-regex`, `app-root`,
//! `x-forwarded-prefix`.
use super::Reader;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RewritePolicy {
    /// Replacement for the matched path, with `$1`..`$9` from the path regex's captures.
    pub target: Option<String>,
    /// Paths are case-insensitive regexes anchored at the start (set by `use-regex`, and
    /// implied by `rewrite-target`, as in ingress-nginx).
    pub regex_paths: bool,
    /// `app-root`: requests for `/` are redirected (302) here.
    pub app_root: Option<String>,
    /// `x-forwarded-prefix`: sent upstream as the X-Forwarded-Prefix header.
    pub forwarded_prefix: Option<String>,
}

pub fn parse(r: &Reader<'_>) -> RewritePolicy {
    let target = r.get("rewrite-target").map(str::to_owned);
    if let Some(t) = &target {
        if !t.starts_with('/') && !t.starts_with("http://") && !t.starts_with("https://") {
            r.error(
                "rewrite-target",
                format!("{t:?} must be a path starting with '/' or an http(s) URL"),
            );
        }
        if t.contains(char::is_whitespace) {
            r.error("rewrite-target", "must not contain whitespace");
        }
    }
    let use_regex = r.bool("use-regex").unwrap_or(false);
    let app_root = r.get("app-root").map(str::to_owned);
    if let Some(a) = &app_root
        && (!a.starts_with('/') || a.contains(char::is_whitespace))
    {
        r.error(
            "app-root",
            format!("{a:?} must be a path starting with '/'"),
        );
    }
    let forwarded_prefix = r.get("x-forwarded-prefix").map(str::to_owned);
    RewritePolicy {
        regex_paths: use_regex || target.is_some(),
        target,
        app_root,
        forwarded_prefix,
    }
}

/// Substitutes `$0`..`$9` in `target` with the captures of `re` on `path`.
pub fn apply(target: &str, re: &regex::Regex, path: &str) -> String {
    let Some(caps) = re.captures(path) else {
        return target.to_owned();
    };
    let mut out = String::with_capacity(target.len() + path.len());
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            out.push_str(caps.get(d as usize).map_or("", |m| m.as_str()));
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rewrite() {
        // The seed's Ingress: path /financial-inference(/|$)(.*) with rewrite-target /$2.
        let re = regex::Regex::new("(?i)^/financial-inference(/|$)(.*)").expect("regex");
        assert_eq!(
            apply("/$2", &re, "/financial-inference/v2/models/x/infer"),
            "/v2/models/x/infer"
        );
        assert_eq!(apply("/$2", &re, "/financial-inference"), "/");
        assert_eq!(apply("/$2", &re, "/FINANCIAL-INFERENCE/a"), "/a");
        assert_eq!(
            apply("/api$1$9", &re, "/financial-inference/x"),
            "/api/",
            "missing group is empty"
        );
        assert_eq!(apply("/cost$", &re, "/financial-inference/x"), "/cost$");
    }
}
