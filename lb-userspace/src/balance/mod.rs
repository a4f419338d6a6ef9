//! Choosing an endpoint of a backend. Discovery (which endpoints exist) is `translate`'s job;
//! selection among them is this module's.
use std::{
    fmt,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

/// A Service port as an Ingress names it, with its resolved endpoints.
#[derive(Debug)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// The port as written in the Ingress: a number or a port name.
    pub port: String,
    /// Ready endpoints (address:targetPort), in a stable order.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(namespace: &str, service: &str, port: &str, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port: port.to_owned(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Round robin over the ready endpoints; `None` when there are none.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i).copied()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_each_endpoint_equally() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::from(([198, 18, 1, i], 8080)))
            .collect();
        let b = Backend::new("ns", "svc", "80", eps.clone());
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            let ep = b.pick().expect("endpoint");
            let i = eps.iter().position(|e| *e == ep).expect("known endpoint");
            counts[i] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn no_endpoints_no_pick() {
        assert_eq!(Backend::new("ns", "svc", "80", vec![]).pick(), None);
    }
}
