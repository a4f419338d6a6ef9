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
    diagnostics::Severity,
    metrics::Metrics,
    provider::Update,
    routes::RouteStore,
    translate::{ClassFilter, Translation, translate},
};

/// Called with every update before its route table is published.
type UpdateHook = Box<dyn Fn(&Update) + Send + Sync>;

pub struct Publisher {
    pub routes: Arc<RouteStore>,
    pub classes: ClassFilter,
    /// Number of route tables published so far.
    pub generation: AtomicUsize,
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
        let mut translation = translate(&update.snapshot, &self.classes);
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
