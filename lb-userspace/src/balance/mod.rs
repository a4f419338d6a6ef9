//! Choosing an endpoint of a backend. Discovery (which endpoints exist) is `translate`'s job;
//! selection among them is this module's: round robin, EWMA power-of-two-choices, consistent
//! hashing and cookie affinity, all skipping endpoints that passive outlier detection
//! ejected (see [`health`]).
pub mod hash;
pub mod health;
pub mod registry;
pub mod rng;

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

pub use health::{EndpointState, Outcome};
pub use registry::StateRegistry;
pub use rng::random_u64;

use crate::translate::annotations::upstream::LoadBalance;

/// How to choose among the endpoints for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    /// Least cost of two random endpoints, cost = EWMA latency x (requests in flight + 1).
    Ewma,
    /// The ring position of this key (consistent hashing).
    Hash(u64),
}

impl From<LoadBalance> for Strategy {
    fn from(lb: LoadBalance) -> Self {
        match lb {
            LoadBalance::RoundRobin => Self::RoundRobin,
            LoadBalance::Ewma => Self::Ewma,
        }
    }
}

/// A Service port as an Ingress names it, with its resolved endpoints.
#[derive(Debug)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// The port as written in the Ingress: a number or a port name.
    pub port: String,
    /// Ready endpoints (address:targetPort), in a stable order.
    pub endpoints: Vec<SocketAddr>,
    /// Health and load of each endpoint, same order as `endpoints` (shared with the
    /// previous route table's Backend for the same Service port: see [`registry`]).
    pub state: Vec<Arc<EndpointState>>,
    next: AtomicUsize,
    ring: OnceLock<hash::Ring>,
    /// Affinity cookie value of each endpoint, same order as `endpoints`.
    tokens: OnceLock<Vec<String>>,
}

impl Backend {
    /// A backend whose endpoints start with fresh state.
    pub fn new(namespace: &str, service: &str, port: &str, endpoints: Vec<SocketAddr>) -> Self {
        let state = endpoints
            .iter()
            .map(|_| Arc::new(EndpointState::default()))
            .collect();
        Self::with_state(namespace, service, port, endpoints, state)
    }

    /// A backend whose endpoints keep the state `registry` remembers for them.
    pub fn registered(
        namespace: &str,
        service: &str,
        port: &str,
        endpoints: Vec<SocketAddr>,
        registry: &StateRegistry,
    ) -> Self {
        let state = registry.states(namespace, service, port, &endpoints);
        Self::with_state(namespace, service, port, endpoints, state)
    }

    fn with_state(
        namespace: &str,
        service: &str,
        port: &str,
        endpoints: Vec<SocketAddr>,
        state: Vec<Arc<EndpointState>>,
    ) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port: port.to_owned(),
            state,
            endpoints,
            next: AtomicUsize::new(0),
            ring: OnceLock::new(),
            tokens: OnceLock::new(),
        }
    }

    /// Round robin over the available endpoints; `None` when there are none.
    pub fn pick(&self) -> Option<SocketAddr> {
        self.choose(Strategy::RoundRobin, &[])
            .and_then(|i| self.endpoints.get(i).copied())
    }

    /// The index of the endpoint for a request, never one of `tried` while another is left,
    /// and an ejected one only when every endpoint is ejected.
    pub fn choose(&self, strategy: Strategy, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let now = health::now_ms();
        let usable = |i: usize| !tried.contains(&i) && !self.state[i].is_ejected(now);
        let fallback = || {
            // Everything tried or ejected: prefer an untried one, then anything.
            (0..n)
                .find(|i| !tried.contains(i))
                .or_else(|| (tried.len() < n).then_some(0))
        };
        let chosen = match strategy {
            Strategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
            }
            Strategy::Ewma => self.power_of_two(&usable, now),
            Strategy::Hash(key) => {
                let ring = self.ring.get_or_init(|| hash::Ring::new(&self.endpoints));
                ring.walk(key).find(|&i| usable(i))
            }
        };
        chosen.or_else(fallback)
    }

    fn power_of_two(&self, usable: &impl Fn(usize) -> bool, now: u64) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.endpoints.len()).filter(|&i| usable(i)).collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            len => {
                let r = random_u64();
                let a = (r % len as u64) as usize;
                let mut b = ((r >> 32) % (len as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                let cost = |i: usize| self.state[i].cost(now);
                Some(if cost(b) < cost(a) { b } else { a })
            }
        }
    }

    /// The endpoint an affinity cookie value names, if it is there and not ejected.
    pub fn by_token(&self, token: &str) -> Option<usize> {
        let now = health::now_ms();
        self.tokens()
            .iter()
            .position(|t| t == token)
            .filter(|&i| !self.state[i].is_ejected(now))
    }

    /// The affinity cookie value of endpoint `i`.
    pub fn token(&self, i: usize) -> Option<&str> {
        self.tokens().get(i).map(String::as_str)
    }

    fn tokens(&self) -> &[String] {
        self.tokens.get_or_init(|| {
            self.endpoints
                .iter()
                .map(|e| format!("{:016x}", hash::hash_bytes(e.to_string().as_bytes())))
                .collect()
        })
    }

    /// Marks a request as started on endpoint `i` (for EWMA's in-flight count).
    pub fn start(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            s.start();
        }
    }

    /// Records how a request to endpoint `i` went; may eject it (never the last one).
    pub fn report(&self, i: usize, outcome: Outcome, latency: Duration) {
        let Some(s) = self.state.get(i) else { return };
        s.finish(outcome, latency);
        if outcome != Outcome::Success && s.wants_ejection(outcome) {
            let now = health::now_ms();
            let others_left = self
                .state
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && !o.is_ejected(now));
            if others_left && s.eject(now) {
                crate::metrics::count_ejection(&self.namespace, &self.service);
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

#[cfg(test)]
mod tests;
