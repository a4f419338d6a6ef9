//! From a provider update to what serves traffic: translate (pure), log the diagnostics,
//! swap the route table atomically. Requests in flight finish on the table they started with.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    balance::StateRegistry,
    diagnostics::Severity,
    metrics::Metrics,
    provider::Update,
    routes::RouteStore,
    translate::{ClassFilter, Translation, translate_with},
};

/// Called with every update before its route table is published.
type UpdateHook = Box<dyn Fn(&Update) + Send + Sync>;

pub struct Publisher {
    pub routes: Arc<RouteStore>,
    pub classes: ClassFilter,
    /// Number of route tables published so far.
    pub generation: AtomicUsize,
    /// Endpoint balancing state (EWMA, ejections) carried from one table to the next.
    pub balance_state: StateRegistry,
    metrics: Option<Arc<Metrics>>,
    /// Called with every update before its route table is published (kernel policy sync).
    on_update: std::sync::OnceLock<UpdateHook>,
}

impl Publisher {
    pub fn new(routes: Arc<RouteStore>, classes: ClassFilter) -> Self {
        Self {
            routes,
            classes,
            generation: AtomicUsize::new(0),
            balance_state: StateRegistry::default(),
            metrics: None,
            on_update: std::sync::OnceLock::new(),
        }
    }

    /// From now on, calls `hook` with every update (e.g. to write ConfigMap policy into
    /// the BPF maps once XDP is attached). Set once; a second hook is refused (`false`).
    pub fn set_update_hook(&self, hook: impl Fn(&Update) + Send + Sync + 'static) -> bool {
        self.on_update.set(Box::new(hook)).is_ok()
    }

    /// Records publishes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Translates `update` and publishes the result; returns the translation's summary.
    pub fn apply(&self, update: &Update) -> Translation {
        let started = Instant::now();
        if let Some(hook) = self.on_update.get() {
            hook(update);
        }
        let mut translation = translate_with(&update.snapshot, &self.classes, &self.balance_state);
        for d in update.diagnostics.iter().chain(&translation.diagnostics) {
            match d.severity {
                Severity::Error => error!(object = %d.object, field = %d.field, "{}", d.message),
                Severity::Warning => warn!(object = %d.object, field = %d.field, "{}", d.message),
            }
        }
        let routes = std::mem::take(&mut translation.routes);
        if let Some(m) = &self.metrics {
            m.set_certificates(&routes.tls);
        }
        self.routes.publish(routes);
        // Endpoints only the previous table held are forgotten once it is gone; those still
        // referenced by requests in flight on it are pruned at a later publish.
        self.balance_state.prune();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(m) = &self.metrics {
            m.publish_duration.observe(started.elapsed().as_secs_f64());
            m.route_tables_published.inc();
            m.rejected_objects.set(translation.rejected.len() as i64);
            // A route table is always published (bad objects are left out, never fatal),
            // so the reload is successful even when some objects were rejected.
            m.config_last_reload_successful.set(1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            m.config_last_reload_successful_timestamp.set(now);
        }
        info!(
            generation,
            ingresses = translation.accepted.len(),
            rejected = translation.rejected.len(),
            micros = started.elapsed().as_micros() as u64,
            "route table published"
        );
        translation
    }

    /// Publishes every update the provider sends, until shutdown.
    pub async fn run(
        self: Arc<Self>,
        mut updates: watch::Receiver<Arc<Update>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = updates.changed() => if r.is_err() { return },
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
            let update = updates.borrow_and_update().clone();
            self.apply(&update);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::Outcome;

    const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: model, namespace: ml}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: model-1, namespace: ml, labels: {kubernetes.io/service-name: model}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["198.18.1.2"]}, {addresses: ["198.18.1.3"]}, {addresses: ["198.18.1.4"]}]
"#;

    fn ingress(name: &str, host: &str) -> String {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata: {{name: {name}, namespace: ml}}\n\
             spec:\n  ingressClassName: ebpf-lb\n  rules: [{{host: {host}, http: {{paths: \
             [{{path: /, pathType: Prefix, backend: {{service: {{name: model, port: {{name: \
             http}}}}}}}}]}}}}]\n"
        )
    }

    fn update(yaml: &str) -> Update {
        Update {
            snapshot: crate::provider::files::fixture(yaml),
            ..Update::default()
        }
    }

    #[test]
    fn ejections_and_latency_survive_a_publish_that_keeps_the_service() {
        let routes = Arc::new(RouteStore::default());
        let publisher = Publisher::new(routes.clone(), ClassFilter::default());
        let one = format!("{SERVICE}{}", ingress("a", "a.test"));
        publisher.apply(&update(&one));
        let backend = routes
            .load()
            .lookup("a.test", "/")
            .expect("route")
            .backend
            .clone();
        let dead = backend.endpoints[0];
        backend.start(0);
        backend.report(0, Outcome::ConnectFailure, Duration::from_millis(1));
        backend.start(1);
        backend.report(1, Outcome::Success, Duration::from_millis(700));
        let now = crate::balance::health::now_ms();
        assert!(backend.state[0].is_ejected(now));
        drop(backend);

        // Another Ingress is added (same Service), then the first one alone again.
        let two = format!("{one}{}", ingress("b", "b.test"));
        for yaml in [&two, &one] {
            publisher.apply(&update(yaml));
            let table = routes.load();
            let b = &table.lookup("a.test", "/").expect("route").backend;
            let i = b
                .endpoints
                .iter()
                .position(|e| *e == dead)
                .expect("endpoint");
            assert!(b.state[i].is_ejected(now), "ejection forgotten");
            assert!(
                b.state[1].ewma() >= Duration::from_millis(700),
                "EWMA forgotten"
            );
            for _ in 0..30 {
                let chosen = b.choose(crate::balance::Strategy::RoundRobin, &[]);
                assert_ne!(chosen, Some(i));
            }
        }
    }

    #[test]
    fn endpoints_that_leave_their_service_are_forgotten() {
        let routes = Arc::new(RouteStore::default());
        let publisher = Publisher::new(routes.clone(), ClassFilter::default());
        let three = format!("{SERVICE}{}", ingress("a", "a.test"));
        publisher.apply(&update(&three));
        assert_eq!(publisher.balance_state.len(), 3);
        let one = three.replace(
            r#"[{addresses: ["198.18.1.2"]}, {addresses: ["198.18.1.3"]}, "#,
            "[",
        );
        publisher.apply(&update(&one));
        assert_eq!(publisher.balance_state.len(), 1);
        publisher.apply(&update(""));
        assert!(publisher.balance_state.is_empty());
    }
}
