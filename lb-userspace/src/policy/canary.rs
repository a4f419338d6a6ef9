//! Choosing between a route's main backend and its canaries: header > cookie > weight.
use std::{
    hash::{BuildHasher as _, RandomState},
    sync::Arc,
};

use http::HeaderMap;

use crate::{
    balance::Backend,
    routes::{Canary, Route},
    translate::annotations::canary::Decision,
};

/// The backend for this request and the canary that won, if any.
pub fn choose<'r>(route: &'r Route, headers: &HeaderMap) -> (&'r Arc<Backend>, Option<&'r Canary>) {
    if route.canaries.is_empty() {
        return (&route.backend, None);
    }
    // Forced decisions first, oldest canary first.
    let mut forced_main = false;
    for c in &route.canaries {
        match c.rule.decide(headers) {
            Decision::Canary => return (&c.backend, Some(c)),
            Decision::Main => forced_main = true,
            Decision::Weight => {}
        }
    }
    if forced_main {
        return (&route.backend, None);
    }
    // Weights: one draw, each canary owning weight/total of the unit interval in turn.
    // SipHash under a fresh per-call key (RandomState) is a uniform 64-bit draw.
    let draw = (RandomState::new().hash_one(route.path.len()) >> 11) as f64 / (1u64 << 53) as f64;
    let mut edge = 0.0;
    for c in &route.canaries {
        edge += f64::from(c.rule.weight) / f64::from(c.rule.weight_total);
        if draw < edge {
            return (&c.backend, Some(c));
        }
    }
    (&route.backend, None)
}
