//! Ingress path matching, exactly as the Kubernetes Ingress v1 spec defines it.
//!
//! - `Exact`: the request path equals the rule path, case-sensitively.
//! - `Prefix`: element-wise prefix on `/`-separated elements. A trailing `/` on either side is
//!   ignored, and `/foo/bar` matches `/foo/bar/baz` but not `/foo/barbaz`.
//!
//! Matching is precompiled: exact paths in a hash map, prefixes in a hash map keyed by their
//! normalised form, so a lookup costs one hash probe per element of the request path instead
//! of a scan over every rule.
use std::{collections::HashMap, fmt};

/// `pathType` of an Ingress path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PathType {
    Exact,
    Prefix,
    /// `Prefix` or `ImplementationSpecific` on an Ingress with `use-regex` or
    /// `rewrite-target`: a case-insensitive regex anchored at the start, as ingress-nginx
    /// writes `location ~* "^<path>"`.
    Regex,
}

impl fmt::Display for PathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::Regex => "Regex",
        })
    }
}

/// The normalised key of a `Prefix` path: no trailing `/` (except the root itself) and no
/// empty elements, so `/foo/`, `/foo` and `//foo` all compile to `/foo`.
pub fn normalise_prefix(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for element in path.split('/').filter(|e| !e.is_empty()) {
        out.push('/');
        out.push_str(element);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Paths of one host, compiled for lookup. `T` is what a match yields (a route).
#[derive(Debug, Clone)]
pub struct PathMatcher<T> {
    exact: HashMap<String, T>,
    prefix: HashMap<String, T>,
    /// Regex paths, longest pattern first (ingress-nginx orders locations by length).
    regex: Vec<(String, regex::Regex, T)>,
}

impl<T> Default for PathMatcher<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            regex: Vec::new(),
        }
    }
}

impl<T> PathMatcher<T> {
    /// Adds a path. Returns `false` (and keeps the first one) when the same path and type is
    /// already present: callers insert older Ingresses first, so the oldest wins.
    ///
    /// `PathType::Regex` paths must be added with [`Self::insert_regex`]; here they are
    /// treated as prefixes.
    pub fn insert(&mut self, path: &str, path_type: PathType, value: T) -> bool {
        let (map, key) = match path_type {
            PathType::Exact => (&mut self.exact, path.to_owned()),
            PathType::Prefix | PathType::Regex => (&mut self.prefix, normalise_prefix(path)),
        };
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, value);
        true
    }

    /// Adds a regex path (`regex` compiled from `pattern` by the caller, who reports
    /// errors). Same-pattern duplicates keep the first, like [`Self::insert`].
    pub fn insert_regex(&mut self, pattern: &str, regex: regex::Regex, value: T) -> bool {
        if self.regex.iter().any(|(p, _, _)| p == pattern) {
            return false;
        }
        // Stable: among equal lengths the older Ingress stays first.
        let at = self
            .regex
            .partition_point(|(p, _, _)| p.len() >= pattern.len());
        self.regex.insert(at, (pattern.to_owned(), regex, value));
        true
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }

    /// Whether a `Prefix` rule for exactly this path exists.
    pub fn has_prefix(&self, path: &str) -> bool {
        self.prefix.contains_key(&normalise_prefix(path))
    }

    /// The best match for a request path: an `Exact` hit (always the longest possible match),
    /// else the longest `Prefix` whose elements are a prefix of the request's elements.
    pub fn lookup(&self, request_path: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(request_path) {
            return Some(v);
        }
        if let Some((_, _, v)) = self
            .regex
            .iter()
            .find(|(_, re, _)| re.is_match(request_path))
        {
            return Some(v);
        }
        if self.prefix.is_empty() {
            return None;
        }
        let norm = normalise_prefix(request_path);
        let mut candidate: &str = &norm;
        loop {
            if let Some(v) = self.prefix.get(candidate) {
                return Some(v);
            }
            if candidate == "/" {
                return None;
            }
            // Drop the last element: "/a/b" -> "/a" -> "/".
            candidate = match candidate.rfind('/') {
                Some(0) | None => "/",
                Some(i) => &candidate[..i],
            };
        }
    }

    /// Every compiled path, for display.
    pub fn iter(&self) -> impl Iterator<Item = (&str, PathType, &T)> {
        self.exact
            .iter()
            .map(|(p, v)| (p.as_str(), PathType::Exact, v))
            .chain(
                self.prefix
                    .iter()
                    .map(|(p, v)| (p.as_str(), PathType::Prefix, v)),
            )
            .chain(
                self.regex
                    .iter()
                    .map(|(p, _, v)| (p.as_str(), PathType::Regex, v)),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(paths: &[(&str, PathType)]) -> PathMatcher<String> {
        let mut m = PathMatcher::default();
        for (p, t) in paths {
            m.insert(p, *t, format!("{t}:{p}"));
        }
        m
    }

    use PathType::{Exact, Prefix};

    /// Every row of the table in the Kubernetes documentation ("Ingress", section
    /// "Examples" under "Path types"), plus the cases its prose states.
    #[test]
    fn kubernetes_documentation_table() {
        type Row<'a> = (&'a [(&'a str, PathType)], &'a str, Option<&'a str>);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (&[("/", Prefix)], "/anything/at/all", Some("Prefix:/")),
            (&[("/foo", Exact)], "/foo", Some("Exact:/foo")),
            (&[("/foo", Exact)], "/bar", None),
            (&[("/foo", Exact)], "/foo/", None),
            (&[("/foo/", Exact)], "/foo", None),
            (&[("/foo", Prefix)], "/foo", Some("Prefix:/foo")),
            (&[("/foo", Prefix)], "/foo/", Some("Prefix:/foo")),
            (&[("/foo/", Prefix)], "/foo", Some("Prefix:/foo/")),
            (&[("/foo/", Prefix)], "/foo/", Some("Prefix:/foo/")),
            (&[("/aaa/bb", Prefix)], "/aaa/bbb", None),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb", Some("Prefix:/aaa/bbb")),
            (&[("/aaa/bbb/", Prefix)], "/aaa/bbb", Some("Prefix:/aaa/bbb/")),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb/", Some("Prefix:/aaa/bbb")),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbb/ccc", Some("Prefix:/aaa/bbb")),
            (&[("/aaa/bbb", Prefix)], "/aaa/bbbxyz", None),
            (&[("/", Prefix), ("/aaa", Prefix)], "/aaa/ccc", Some("Prefix:/aaa")),
            (&[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/aaa/bbb", Some("Prefix:/aaa/bbb")),
            (&[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/ccc", Some("Prefix:/")),
            (&[("/aaa", Prefix)], "/ccc", None),
            (&[("/foo", Prefix), ("/foo", Exact)], "/foo", Some("Exact:/foo")),
            // Prose: "/foo/bar matches /foo/bar/baz, but does not match /foo/barbaz".
            (&[("/foo/bar", Prefix)], "/foo/bar/baz", Some("Prefix:/foo/bar")),
            (&[("/foo/bar", Prefix)], "/foo/barbaz", None),
            // Exact is case-sensitive; so is Prefix.
            (&[("/Foo", Exact)], "/foo", None),
            (&[("/Foo", Prefix)], "/foo", None),
            // An Exact rule does not match sub-paths, and loses to nothing it does match.
            (&[("/foo", Exact), ("/", Prefix)], "/foo/bar", Some("Prefix:/")),
        ];
        for (paths, request, expected) in rows {
            let m = matcher(paths);
            assert_eq!(
                m.lookup(request).map(String::as_str),
                *expected,
                "paths {paths:?}, request {request}"
            );
        }
    }

    #[test]
    fn first_insert_wins() {
        let mut m = PathMatcher::default();
        assert!(m.insert("/a", Prefix, 1));
        assert!(!m.insert("/a/", Prefix, 2));
        assert_eq!(m.lookup("/a/x"), Some(&1));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalise_prefix("/"), "/");
        assert_eq!(normalise_prefix(""), "/");
        assert_eq!(normalise_prefix("//a//b/"), "/a/b");
    }
}
