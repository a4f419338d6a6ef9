//! One watcher + reflector store per kind. Each store is trimmed before it keeps an object
//! (managedFields and the last-applied annotation are never read and are often the larger part
//! of an object), and every settled change bumps one shared counter the provider debounces on.
use std::{collections::HashSet, fmt::Debug, time::Duration};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use super::{CONFIG_MAP_NAME, KubeError, KubeOptions, OPAQUE_SECRET_TYPE, TLS_SECRET_TYPE};
use crate::{
    provider::Snapshot,
    translate::{
        annotations::basic_auth::{AUTH_SECRET_ANNOTATION, secret_ref},
        configmaps::{CONFIGMAP_ANNOTATIONS, configmap_ref},
    },
};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The stores the snapshot is read from.
#[derive(Clone)]
pub struct Stores {
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// `kubernetes.io/tls` Secrets (certificates).
    pub secrets: Store<Secret>,
    /// `Opaque` Secrets (basic authentication's `auth-secret`).
    pub opaque_secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub pods: Store<Pod>,
    /// The controller's namespace (where ConfigMap `ebpf-lb` is read).
    pub namespace: String,
    /// The `--default-ssl-certificate` Secret, kept in snapshots.
    pub default_certificate: Option<(String, String)>,
}

/// The running watchers: aborted when dropped.
pub struct Watchers {
    pub stores: Stores,
    /// Bumped after every applied or deleted object and after every (re)list.
    pub changes: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one watcher per kind: cluster-wide for what Ingresses may name, the controller's
/// namespace for its ConfigMap and its own pods.
pub fn start(client: &Client, opts: &KubeOptions) -> Watchers {
    let (tx, changes) = watch::channel(0u64);
    let ns = opts.namespace.as_str();
    let mut tasks = Vec::new();
    let all = watcher::Config::default();
    let stores = Stores {
        ingresses: spawn(Api::all(client.clone()), all.clone(), &tx, &mut tasks),
        ingress_classes: spawn(Api::all(client.clone()), all.clone(), &tx, &mut tasks),
        services: spawn(Api::all(client.clone()), all.clone(), &tx, &mut tasks),
        endpoint_slices: spawn(Api::all(client.clone()), all.clone(), &tx, &mut tasks),
        secrets: spawn(
            Api::all(client.clone()),
            all.clone().fields(&format!("type={TLS_SECRET_TYPE}")),
            &tx,
            &mut tasks,
        ),
        // Two field-selected watches rather than every Secret: Helm releases and
        // service-account tokens (often most of a cluster's Secrets) stay out of memory.
        opaque_secrets: spawn(
            Api::all(client.clone()),
            all.clone().fields(&format!("type={OPAQUE_SECRET_TYPE}")),
            &tx,
            &mut tasks,
        ),
        // Cluster-wide: besides `ebpf-lb` here, Ingresses name header ConfigMaps in any
        // namespace (custom-headers, auth-proxy-set-headers); the snapshot keeps only those.
        config_maps: spawn(Api::all(client.clone()), all.clone(), &tx, &mut tasks),
        pods: spawn(
            Api::namespaced(client.clone(), ns),
            all.labels(&opts.node_selector),
            &tx,
            &mut tasks,
        ),
        namespace: ns.to_owned(),
        default_certificate: opts.default_certificate.clone(),
    };
    Watchers {
        stores,
        changes,
        tasks,
    }
}

/// Removes what no reader of the stores looks at.
fn trim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &watch::Sender<u64>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let kind = K::kind(&());
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|o: &mut K| trim(o)),
    );
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // A relist is applied to the store in one step, at InitDone.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    changed.send_modify(|g| *g += 1);
                }
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    debug!(%kind, "watch expired (410 Gone): relisting");
                }
                Err(e) => warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    }));
    reader
}

impl Stores {
    /// Waits for the first complete list of every kind.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), KubeError> {
        let all = async {
            let results = [
                ("Ingress", self.ingresses.wait_until_ready().await),
                (
                    "IngressClass",
                    self.ingress_classes.wait_until_ready().await,
                ),
                ("Service", self.services.wait_until_ready().await),
                (
                    "EndpointSlice",
                    self.endpoint_slices.wait_until_ready().await,
                ),
                ("Secret", self.secrets.wait_until_ready().await),
                ("Secret", self.opaque_secrets.wait_until_ready().await),
                ("ConfigMap", self.config_maps.wait_until_ready().await),
                ("Pod", self.pods.wait_until_ready().await),
            ];
            for (kind, r) in results {
                r.map_err(|_| KubeError::WatcherStopped { kind })?;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| KubeError::NotReady {
                pending: self.pending(),
            })?
    }

    /// Kinds whose first list has not completed (the usual cause: missing RBAC).
    fn pending(&self) -> String {
        let ready = [
            (
                "ingresses",
                self.ingresses.wait_until_ready().now_or_never(),
            ),
            (
                "ingressclasses",
                self.ingress_classes.wait_until_ready().now_or_never(),
            ),
            ("services", self.services.wait_until_ready().now_or_never()),
            (
                "endpointslices",
                self.endpoint_slices.wait_until_ready().now_or_never(),
            ),
            ("secrets", self.secrets.wait_until_ready().now_or_never()),
            (
                "secrets (Opaque)",
                self.opaque_secrets.wait_until_ready().now_or_never(),
            ),
            (
                "configmaps",
                self.config_maps.wait_until_ready().now_or_never(),
            ),
            ("pods", self.pods.wait_until_ready().now_or_never()),
        ];
        let pending: Vec<&str> = ready
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(kind, _)| *kind)
            .collect();
        pending.join(", ")
    }

    /// The objects translation reads. Secrets are limited to those an Ingress names in
    /// `spec.tls[].secretName` or in `auth-secret` (same namespace) and the
    /// `--default-ssl-certificate` one: the rest of a cluster's keys stay out of every
    /// snapshot. ConfigMaps likewise: `ebpf-lb` and those Ingress annotations name.
    pub fn snapshot(&self) -> Snapshot {
        let ingresses = owned(&self.ingresses);
        let mut referenced: HashSet<(String, String)> = ingresses
            .iter()
            .flat_map(|i| {
                let ns = i.namespace().unwrap_or_else(|| "default".into());
                // (Translation refuses a Secret in another namespace.)
                let auth = i.annotations().get(AUTH_SECRET_ANNOTATION).map(|v| {
                    let (sns, name) = secret_ref(v.trim(), &ns);
                    (sns.to_owned(), name.to_owned())
                });
                i.spec
                    .iter()
                    .flat_map(|s| s.tls.iter().flatten())
                    .filter_map(move |t| t.secret_name.clone().map(|n| (ns.clone(), n)))
                    .chain(auth)
            })
            .collect();
        referenced.extend(self.default_certificate.clone());
        let secrets = self
            .secrets
            .state()
            .into_iter()
            .chain(self.opaque_secrets.state())
            .filter(|s| {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                referenced.contains(&key)
            })
            .map(|s| (*s).clone())
            .collect();
        // ConfigMaps: `ebpf-lb` in our namespace, and those an Ingress annotation names.
        let mut wanted: HashSet<(String, String)> = ingresses
            .iter()
            .flat_map(|i| {
                let annotations = i.annotations();
                CONFIGMAP_ANNOTATIONS.iter().filter_map(move |a| {
                    let (ns, name) = configmap_ref(annotations.get(*a)?);
                    Some((ns.to_owned(), name.to_owned()))
                })
            })
            .collect();
        wanted.insert((self.namespace.clone(), CONFIG_MAP_NAME.to_owned()));
        let mut config_maps: Vec<ConfigMap> = owned(&self.config_maps);
        config_maps.retain(|c| {
            let key = (
                c.namespace().unwrap_or_else(|| "default".into()),
                c.name_any(),
            );
            wanted.contains(&key)
        });
        Snapshot {
            ingresses,
            ingress_classes: owned(&self.ingress_classes),
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
            secrets,
            config_maps,
        }
    }
}

/// A store's objects, sorted by namespace and name so equal states give equal snapshots.
fn owned<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<K> {
    let mut v: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    v.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    v
}
