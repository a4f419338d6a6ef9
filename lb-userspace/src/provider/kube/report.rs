//! After each publish, the leader tells Kubernetes what was done: Ingress status for what is
//! served, Events for what was not. Runs beside the publisher so a slow API server never
//! delays a route table; it always works on the latest publish and re-runs on gaining
//! leadership.
use std::{net::IpAddr, sync::Arc};

use kube::Client;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{events::EventReporter, status};
use crate::{diagnostics::Diagnostic, provider::Update, publish::Publisher, routes::IngressRef};

/// What one publish did, as the reporter needs it.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub update: Arc<Update>,
    pub accepted: Vec<IngressRef>,
    pub rejected: Vec<IngressRef>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Publishes every update (like [`Publisher::run`]) and hands each result to the reporter.
pub async fn publish_loop(
    publisher: Arc<Publisher>,
    mut updates: watch::Receiver<Arc<Update>>,
    published: watch::Sender<Arc<Published>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The current value too: the reporter needs the first publish as much as the others.
    updates.mark_changed();
    loop {
        tokio::select! {
            r = updates.changed() => if r.is_err() { return },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let update = updates.borrow_and_update().clone();
        let t = publisher.apply(&update);
        let mut diagnostics = update.diagnostics.clone();
        diagnostics.extend(t.diagnostics);
        let _ = published.send(Arc::new(Published {
            update,
            accepted: t.accepted,
            rejected: t.rejected,
            diagnostics,
        }));
    }
}

/// The leader's side: status and Events for the latest publish.
pub struct Reporter {
    pub client: Client,
    pub vips: Vec<IpAddr>,
    /// `reportingInstance` of Events: this pod.
    pub identity: String,
    events: EventReporter,
}

impl Reporter {
    pub fn new(client: Client, vips: Vec<IpAddr>, identity: String) -> Self {
        Self {
            client,
            vips,
            identity,
            events: EventReporter::default(),
        }
    }

    /// Reports until shutdown: after every publish and on every leadership change, while
    /// leading.
    pub async fn run(
        mut self,
        mut published: watch::Receiver<Arc<Published>>,
        mut leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let p = published.borrow_and_update().clone();
            if *leader.borrow_and_update() {
                self.report(&p).await;
            }
            tokio::select! {
                r = published.changed() => if r.is_err() { return },
                r = leader.changed() => if r.is_err() { return },
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
    }

    /// One pass: status patches, then new Events. Failures are logged and retried on the
    /// next pass (status is planned from what the API server shows, so nothing is lost).
    pub async fn report(&mut self, p: &Published) {
        let ingresses = &p.update.snapshot.ingresses;
        for patch in status::plan(ingresses, &p.accepted, &self.vips) {
            match status::apply(&self.client, &patch).await {
                Ok(()) => debug!(ingress = %format!("{}/{}", patch.namespace, patch.name),
                    addresses = patch.ingress.len(), "status updated"),
                Err(e) => warn!(ingress = %format!("{}/{}", patch.namespace, patch.name),
                    error = %e, "status update failed"),
            }
        }
        let planned = self
            .events
            .plan(ingresses, &p.diagnostics, &p.rejected, &self.identity);
        for (key, event) in planned {
            if let Err(e) = super::events::post(&self.client, &event).await {
                warn!(object = %key.0, error = %e, "posting an Event failed");
                self.events.forget(&key);
            }
        }
    }
}
