//! Per-endpoint balancing state that outlives route tables. Every publish builds new
//! `Backend`s; without this, each one would start with fresh EWMA latencies and forget
//! which endpoints passive outlier detection ejected, so a route change anywhere would
//! send traffic back to a dead or slow endpoint. The registry hands the new table the
//! state the current one holds for the same Service port and endpoint address.
//!
//! It keeps weak references only: the state lives as long as some route table (the one
//! published, or an older one requests still run on) holds it, so an endpoint that left
//! its Service and comes back later starts afresh, and nothing here grows without bound.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
};

use super::EndpointState;

/// (namespace, service, port as the Ingress names it).
type ServiceKey = (String, String, String);

#[derive(Debug, Default)]
pub struct StateRegistry {
    services: Mutex<HashMap<ServiceKey, HashMap<SocketAddr, Weak<EndpointState>>>>,
}

impl StateRegistry {
    /// The state of each of `endpoints` of `namespace/service:port`: the live one when a
    /// route table holds it, else a new one (registered for the next tables).
    pub fn states(
        &self,
        namespace: &str,
        service: &str,
        port: &str,
        endpoints: &[SocketAddr],
    ) -> Vec<Arc<EndpointState>> {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = services
            .entry((namespace.to_owned(), service.to_owned(), port.to_owned()))
            .or_default();
        endpoints
            .iter()
            .map(|addr| {
                if let Some(live) = known.get(addr).and_then(Weak::upgrade) {
                    return live;
                }
                let fresh = Arc::new(EndpointState::default());
                known.insert(*addr, Arc::downgrade(&fresh));
                fresh
            })
            .collect()
    }

    /// Forgets endpoints no route table holds any more.
    pub fn prune(&self) {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        services.retain(|_, endpoints| {
            endpoints.retain(|_, state| state.strong_count() > 0);
            !endpoints.is_empty()
        });
    }

    /// Endpoints whose state is remembered (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
