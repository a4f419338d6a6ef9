//! The per-request series of the request families, cached per thread: prometheus-client
//! finds a series by hashing and comparing its whole label set, which cost five lookups and
//! sixteen label strings per request. Here a request hashes its label values once, borrowed,
//! and a hit allocates nothing. Series are never removed from these families, so a cached
//! handle stays the family's series.
use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
};

use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, NginxCounter, RequestLabels, UpstreamLabels};

/// Cached label sets per thread; past this the cache starts again (the families keep their
/// series: only the shortcut is lost).
const MAX_CACHED: usize = 4096;

/// The labels of one request, borrowed from its record.
#[derive(Hash)]
pub struct SeriesKey<'a> {
    /// The observer whose metrics these are (tests run several on one thread).
    pub observer: u64,
    pub status: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub canary: bool,
    pub host: &'a str,
}

impl SeriesKey<'_> {
    /// The label set as the families have it (`canary` is the service of a canary).
    pub fn labels(&self) -> RequestLabels {
        RequestLabels {
            status: self.status.to_string(),
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            namespace: self.namespace.to_owned(),
            ingress: self.ingress.to_owned(),
            service: self.service.to_owned(),
            canary: if self.canary {
                self.service.to_owned()
            } else {
                String::new()
            },
            host: self.host.to_owned(),
        }
    }

    fn upstream_labels(labels: &RequestLabels) -> UpstreamLabels {
        UpstreamLabels {
            method: labels.method.clone(),
            path: labels.path.clone(),
            namespace: labels.namespace.clone(),
            ingress: labels.ingress.clone(),
            service: labels.service.clone(),
            canary: labels.canary.clone(),
            host: labels.host.clone(),
            status: labels.status.clone(),
        }
    }
}

/// The series of one label set.
pub struct Series {
    pub requests: NginxCounter,
    pub duration: Histogram,
    pub request_size: Histogram,
    pub response_size: Histogram,
    /// Upstream response time: created with the first request of this label set that had
    /// one, as the family would.
    pub upstream: Option<Histogram>,
}

struct Entry {
    observer: u64,
    labels: RequestLabels,
    canary: bool,
    status: u16,
    series: Series,
}

impl Entry {
    fn matches(&self, k: &SeriesKey<'_>) -> bool {
        let l = &self.labels;
        self.observer == k.observer
            && self.status == k.status
            && self.canary == k.canary
            && l.method == k.method
            && l.path == k.path
            && l.namespace == k.namespace
            && l.ingress == k.ingress
            && l.service == k.service
            && l.host == k.host
    }
}

/// The map's keys are already hashes.
#[derive(Default)]
struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Cache {
    /// Keyed by the label values' hash under `state` (random per thread: hosts come from
    /// clients).
    state: foldhash::fast::RandomState,
    entries: HashMap<u64, Vec<Entry>, BuildHasherDefault<PassHasher>>,
    len: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Runs `f` on the series of `key` in `metrics`, looked up (and created) on a miss;
/// `upstream`: the request has an upstream response time.
pub fn with(key: &SeriesKey<'_>, metrics: &Metrics, upstream: bool, f: impl FnOnce(&Series)) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let cache = &mut *cache;
        let hash = cache.state.hash_one(key);
        if cache.len >= MAX_CACHED && !cache.entries.contains_key(&hash) {
            cache.entries.clear();
            cache.len = 0;
        }
        let bucket = cache.entries.entry(hash).or_default();
        let i = match bucket.iter().position(|e| e.matches(key)) {
            Some(i) => i,
            None => {
                let labels = key.labels();
                bucket.push(Entry {
                    observer: key.observer,
                    canary: key.canary,
                    status: key.status,
                    series: Series {
                        requests: metrics.requests.get_or_create(&labels).clone(),
                        duration: metrics.request_duration.get_or_create(&labels).clone(),
                        request_size: metrics.request_size.get_or_create(&labels).clone(),
                        response_size: metrics.response_size.get_or_create(&labels).clone(),
                        upstream: None,
                    },
                    labels,
                });
                cache.len += 1;
                bucket.len() - 1
            }
        };
        let Some(entry) = bucket.get_mut(i) else {
            return;
        };
        if upstream && entry.series.upstream.is_none() {
            let up = SeriesKey::upstream_labels(&entry.labels);
            entry.series.upstream = Some(metrics.response_duration.get_or_create(&up).clone());
        }
        f(&entry.series);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(observer: u64, host: &'a str, status: u16) -> SeriesKey<'a> {
        SeriesKey {
            observer,
            status,
            method: "GET",
            path: "/",
            namespace: "ns",
            ingress: "ing",
            service: "svc",
            canary: false,
            host,
        }
    }

    #[test]
    fn cached_series_are_the_families_series() {
        let m = Metrics::new();
        for _ in 0..3 {
            with(&key(u64::MAX, "a", 200), &m, true, |s| {
                s.requests.0.inc();
            });
        }
        with(&key(u64::MAX, "b", 200), &m, false, |s| {
            s.requests.0.inc();
        });
        with(&key(u64::MAX, "a", 404), &m, false, |s| {
            s.requests.0.inc();
        });
        let labels = key(u64::MAX, "a", 200).labels();
        assert_eq!(m.requests.get_or_create(&labels).0.get(), 3);
        assert_eq!(
            m.requests
                .get_or_create(&key(u64::MAX, "b", 200).labels())
                .0
                .get(),
            1
        );
        // Upstream series only for label sets that had an upstream time.
        let text = m.encode();
        assert_eq!(
            text.matches("nginx_ingress_controller_response_duration_seconds_count{")
                .count(),
            1,
            "{text}"
        );

        // Another observer's metrics on the same thread get their own series.
        let other = Metrics::new();
        with(&key(u64::MAX - 1, "a", 200), &other, false, |s| {
            s.requests.0.inc();
        });
        assert_eq!(other.requests.get_or_create(&labels).0.get(), 1);
        assert_eq!(m.requests.get_or_create(&labels).0.get(), 3);
    }
}
