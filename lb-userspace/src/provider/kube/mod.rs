//! The kube provider: watchers and reflector stores for the kinds translation reads (trimmed
//! of managedFields), one complete snapshot before the first publish, then debounced updates.
//! The leader of a Lease reports back: Ingress status for what is served, Events for what is
//! not (see [`report`]). The proxy node set comes from the DaemonSet's Ready pods.
pub mod events;
pub mod leader;
pub mod nodes;
pub mod reflectors;
pub mod report;
pub mod status;

use std::{net::IpAddr, sync::Arc, time::Duration};

use kube::Client;
use tokio::{sync::watch, task::JoinHandle};
use tracing::info;

use super::Update;
use crate::publish::Publisher;
pub use leader::{LEASE_NAME, LeaseTiming};

/// Field manager of every write (status patches).
pub const FIELD_MANAGER: &str = "ebpf-lb";
/// The controller's ConfigMap, in `--namespace`.
pub const CONFIG_MAP_NAME: &str = "ebpf-lb";
/// The Secret types read (field selector `type=`): certificates, and basic authentication's
/// user files (`kubectl create secret generic` makes `Opaque` ones).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
pub const OPAQUE_SECRET_TYPE: &str = "Opaque";

/// Every API call the kube provider makes: (API group, resource, verbs). The deploy RBAC
/// must grant exactly these; a test compares this table with the requests a run makes.
pub const API_CALLS: &[(&str, &str, &[&str])] = &[
    ("networking.k8s.io", "ingresses", &["list", "watch"]),
    ("networking.k8s.io", "ingresses/status", &["patch"]),
    ("networking.k8s.io", "ingressclasses", &["list", "watch"]),
    ("", "services", &["list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("", "secrets", &["list", "watch"]),
    ("", "configmaps", &["list", "watch"]),
    ("", "pods", &["list", "watch"]),
    ("", "events", &["create"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// How the kube provider runs.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// The controller's namespace (ConfigMap `ebpf-lb`, the Lease, our pods).
    pub namespace: String,
    /// Label selector of the DaemonSet's pods, e.g. `app.kubernetes.io/name=ebpf-lb`.
    pub node_selector: String,
    /// The VIPs written into Ingress status.
    pub vips: Vec<IpAddr>,
    /// This pod's name: the Lease holder and the Events' reporting instance.
    pub identity: String,
    pub lease: LeaseTiming,
    /// A burst of changes settles for this long before one update is published.
    pub debounce: Duration,
    /// How long the first complete list of every kind may take.
    pub ready_timeout: Duration,
    /// `--default-ssl-certificate` (namespace, name): kept in snapshots although no Ingress
    /// names it (other TLS Secrets are left out unless an Ingress does).
    pub default_certificate: Option<(String, String)>,
}

impl KubeOptions {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            node_selector: "app.kubernetes.io/name=ebpf-lb".into(),
            vips: Vec::new(),
            identity: identity.into(),
            lease: LeaseTiming::default(),
            debounce: Duration::from_millis(100),
            ready_timeout: Duration::from_secs(60),
            default_certificate: None,
        }
    }
}

/// This pod's name ($POD_NAME, from the downward API), else the host name.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("ebpf-lb-{}", std::process::id()))
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No in-cluster configuration and no usable KUBECONFIG.
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG)")]
    Config(#[source] kube::Error),
    /// The first list of some kinds did not complete in time (RBAC is the usual cause).
    #[error("the first list of {pending} did not complete (check RBAC and the API server)")]
    NotReady { pending: String },
    /// A watcher ended before its first list.
    #[error("the {kind} watcher stopped")]
    WatcherStopped { kind: &'static str },
}

/// The running watchers, and the debounce that turns their changes into updates.
pub struct KubeProvider {
    watchers: reflectors::Watchers,
    debounce: Duration,
}

impl KubeProvider {
    /// A client from the in-cluster service account, else KUBECONFIG / ~/.kube/config.
    pub async fn default_client() -> Result<Client, KubeError> {
        Client::try_default().await.map_err(KubeError::Config)
    }

    /// Starts every watcher and waits for each kind's first complete list.
    pub async fn start(client: &Client, opts: &KubeOptions) -> Result<Self, KubeError> {
        let watchers = reflectors::start(client, opts);
        watchers.stores.wait_until_ready(opts.ready_timeout).await?;
        Ok(Self {
            watchers,
            debounce: opts.debounce,
        })
    }

    /// The current state of the stores.
    pub fn update(&self) -> Update {
        let stores = &self.watchers.stores;
        let pods = stores.pods.state();
        Update {
            snapshot: stores.snapshot(),
            diagnostics: Vec::new(),
            nodes: Some(nodes::node_ips(pods.iter().map(|p| &**p))),
        }
    }

    /// Sends an update after every settled burst of changes, until shutdown.
    pub async fn run(
        mut self,
        tx: watch::Sender<Arc<Update>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = self.watchers.changes.changed() => if r.is_err() { return },
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
            // Debounce: a rollout touches many EndpointSlices at once. Bounded, so a
            // never-quiet cluster still gets an update every ~20 periods.
            for _ in 0..20 {
                tokio::time::sleep(self.debounce).await;
                if !self.watchers.changes.has_changed().unwrap_or(false) {
                    break;
                }
                self.watchers.changes.borrow_and_update();
            }
            self.watchers.changes.borrow_and_update();
            let _ = tx.send(Arc::new(self.update()));
        }
    }
}

/// Spawns what runs beside the provider in kube mode: the Lease loop, the publisher (which
/// also hands each result to the reporter) and the reporter.
pub fn spawn_publishing(
    client: Client,
    opts: &KubeOptions,
    publisher: Arc<Publisher>,
    updates: watch::Receiver<Arc<Update>>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (published_tx, published_rx) = watch::channel(Arc::new(report::Published::default()));
    info!(namespace = %opts.namespace, identity = %opts.identity, lease = LEASE_NAME,
        "kube provider: publishing, leader election for status and Events");
    vec![
        tokio::spawn(leader::run(
            client.clone(),
            opts.namespace.clone(),
            opts.identity.clone(),
            opts.lease,
            leader_tx,
            shutdown.clone(),
        )),
        tokio::spawn(report::publish_loop(
            publisher,
            updates,
            published_tx,
            shutdown.clone(),
        )),
        tokio::spawn(
            report::Reporter::new(client, opts.vips.clone(), opts.identity.clone()).run(
                published_rx,
                leader_rx,
                shutdown,
            ),
        ),
    ]
}
