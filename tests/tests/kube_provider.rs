//! Tier 4: the kube provider against the in-process fake API server (real list/watch JSON,
//! resourceVersion, BOOKMARK, 410 Gone and relist), with status patches, Events and the Lease
//! asserted on what the fake recorded. No root, no network beyond 127.0.0.1.
use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use lb_userspace::{
    provider::{
        Update,
        kube::{API_CALLS, KubeOptions, KubeProvider, LEASE_NAME, LeaseTiming, spawn_publishing},
    },
    publish::Publisher,
    routes::RouteStore,
    translate::ClassFilter,
};
use serde_json::{Value, json};
use tests::fake_apiserver::FakeApiServer;
use tokio::sync::watch;

const NS: &str = "ebpf-lb";
const VIP: &str = "198.18.0.210";
const DEADLINE: Duration = Duration::from_secs(20);

fn client(fake: &FakeApiServer) -> kube::Client {
    let url = fake.url().parse().expect("fake url");
    kube::Client::try_from(kube::Config::new(url)).expect("client")
}

fn options() -> KubeOptions {
    let mut o = KubeOptions::new(NS, "ebpf-lb-test-0");
    o.vips = vec![VIP.parse().expect("vip")];
    o.debounce = Duration::from_millis(20);
    o.ready_timeout = DEADLINE;
    o.lease = LeaseTiming {
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(100),
    };
    o
}

/// Polls `cond` every 20 ms until it holds or the deadline passes (then panics with `what`).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ingress(name: &str, class: &str, service: &str, tls_secret: Option<&str>) -> Value {
    let mut spec = json!({"ingressClassName": class, "rules": [{"host": format!("{name}.example"),
        "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]});
    if let Some(s) = tls_secret {
        spec["tls"] = json!([{"hosts": [format!("{name}.example")], "secretName": s}]);
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "ml",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                "nginx.ingress.kubernetes.io/custom-headers": "ml/resp-headers"}},
        "spec": spec})
}

fn secret(name: &str, type_: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"name": name, "namespace": "ml"},
        "data": {"tls.crt": "", "tls.key": ""}})
}

fn pod(name: &str, host_ip: &str, ready: bool, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/name": app}},
        "status": {"hostIP": host_ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// A small cluster: our IngressClass, a Service with one endpoint, ConfigMaps, TLS and other
/// Secrets, and the DaemonSet's pods.
fn seed(fake: &FakeApiServer) {
    fake.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "ebpf-lb"}, "spec": {"controller": "ebpf-lb.io/ingress-controller"}}),
    );
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "model", "namespace": "ml"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}));
    fake.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "model-1", "namespace": "ml",
            "labels": {"kubernetes.io/service-name": "model"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.1.10"], "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}),
    );
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ebpf-lb", "namespace": NS}, "data": {"penalty-seconds": "30"}}));
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "unrelated", "namespace": NS}, "data": {}}));
    // Named by Ingress "a"'s custom-headers annotation (another namespace), and one nobody
    // names.
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "resp-headers", "namespace": "ml"}, "data": {"X-Model": "v2"}}));
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "unnamed", "namespace": "ml"}, "data": {}}));
    fake.apply(secret("used-tls", "kubernetes.io/tls"));
    fake.apply(secret("unused-tls", "kubernetes.io/tls"));
    fake.apply(secret("opaque", "Opaque"));
    fake.apply(pod("lb-a", "198.18.0.1", true, "ebpf-lb"));
    fake.apply(pod("lb-b", "198.18.0.2", false, "ebpf-lb"));
    fake.apply(pod("other", "198.18.0.3", true, "something-else"));
}

fn names<T: kube::Resource>(objs: &[T]) -> BTreeSet<String> {
    objs.iter().filter_map(|o| o.meta().name.clone()).collect()
}

fn latest(rx: &watch::Receiver<Arc<Update>>) -> Arc<Update> {
    rx.borrow().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_certificate_secret_is_kept_though_no_ingress_names_it() {
    let fake = FakeApiServer::start().await.expect("fake");
    seed(&fake);
    fake.apply(ingress("a", "ebpf-lb", "model", Some("used-tls")));
    let mut opts = options();
    opts.default_certificate = Some(("ml".into(), "unused-tls".into()));
    let provider = KubeProvider::start(&client(&fake), &opts)
        .await
        .expect("first lists complete");
    assert_eq!(
        names(&provider.update().snapshot.secrets),
        BTreeSet::from(["used-tls".into(), "unused-tls".into()])
    );
}

/// Basic authentication's Secrets are `Opaque` (`kubectl create secret generic`): an Opaque
/// Secret an Ingress names in `auth-secret` is in the snapshot, and Secrets of other types
/// (Helm releases, tokens) are not even watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_secrets_named_by_ingresses_are_kept() {
    let fake = FakeApiServer::start().await.expect("fake");
    seed(&fake);
    fake.apply(secret("release", "helm.sh/release.v1"));
    let auth = "nginx.ingress.kubernetes.io/auth-secret";
    let mut b = ingress("b", "ebpf-lb", "model", None);
    b["metadata"]["annotations"][auth] = json!("opaque");
    let mut c = ingress("c", "ebpf-lb", "model", None);
    c["metadata"]["annotations"][auth] = json!("ml/release");
    fake.apply(ingress("a", "ebpf-lb", "model", Some("used-tls")));
    fake.apply(b);
    fake.apply(c);
    let provider = KubeProvider::start(&client(&fake), &options())
        .await
        .expect("first lists complete");
    assert_eq!(
        names(&provider.update().snapshot.secrets),
        BTreeSet::from(["used-tls".into(), "opaque".into()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_watch_bookmark_and_relist_after_410() {
    let fake = FakeApiServer::start().await.expect("fake");
    seed(&fake);
    fake.apply(ingress("a", "ebpf-lb", "model", Some("used-tls")));
    let provider = KubeProvider::start(&client(&fake), &options())
        .await
        .expect("first lists complete");

    let first = provider.update();
    let s = &first.snapshot;
    assert_eq!(names(&s.ingresses), BTreeSet::from(["a".into()]));
    assert_eq!(
        names(&s.ingress_classes),
        BTreeSet::from(["ebpf-lb".into()])
    );
    assert_eq!(names(&s.services), BTreeSet::from(["model".into()]));
    assert_eq!(
        names(&s.endpoint_slices),
        BTreeSet::from(["model-1".into()])
    );
    assert_eq!(
        names(&s.config_maps),
        BTreeSet::from(["ebpf-lb".into(), "resp-headers".into()]),
        "ConfigMap ebpf-lb and the header ConfigMaps Ingresses name"
    );
    assert_eq!(
        names(&s.secrets),
        BTreeSet::from(["used-tls".into()]),
        "only TLS Secrets an Ingress references"
    );
    let meta = &s.ingresses[0].metadata;
    assert!(
        meta.managed_fields.as_ref().is_none_or(Vec::is_empty),
        "managedFields trimmed"
    );
    assert!(
        meta.annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("kubectl.kubernetes.io/last-applied-configuration")),
        "last-applied trimmed"
    );
    assert_eq!(
        first.nodes,
        Some(vec!["198.18.0.1".parse::<IpAddr>().expect("ip")])
    );

    let (tx, rx) = watch::channel(Arc::new(first.clone()));
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(provider.run(tx, stop_rx));
    let has = |rx: &watch::Receiver<Arc<Update>>, n: &str| {
        latest(rx)
            .snapshot
            .ingresses
            .iter()
            .any(|i| i.metadata.name.as_deref() == Some(n))
    };

    fake.apply(ingress("b", "ebpf-lb", "model", None));
    wait_for("added Ingress b in an update", || has(&rx, "b")).await;

    // BOOKMARKs only move the resourceVersion: the stream goes on, nothing is lost.
    fake.bookmark();
    fake.apply(ingress("c", "ebpf-lb", "model", None));
    wait_for("Ingress c after a BOOKMARK", || has(&rx, "c")).await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.verb == "watch" && r.query.contains("allowWatchBookmarks=true")),
        "watches ask for bookmarks"
    );

    fake.delete("networking.k8s.io/v1", "Ingress", "ml", "a");
    wait_for("deleted Ingress a gone", || !has(&rx, "a")).await;

    // 410 Gone: history compacted, every watch must relist; a change made meanwhile and a
    // newly referenced Secret must both show up.
    let lists_before = count(&fake, "ingresses", "list");
    fake.expire_watches();
    fake.apply(ingress("d", "ebpf-lb", "model", Some("unused-tls")));
    wait_for("Ingress d after relisting", || has(&rx, "d")).await;
    wait_for("relist of ingresses", || {
        count(&fake, "ingresses", "list") > lists_before
    })
    .await;
    wait_for("Secret referenced by d", || {
        names(&latest(&rx).snapshot.secrets).contains("unused-tls")
    })
    .await;
    let u = latest(&rx);
    assert_eq!(
        names(&u.snapshot.ingresses),
        BTreeSet::from(["b".into(), "c".into(), "d".into()])
    );

    // Node set follows the DaemonSet's pods.
    fake.apply(pod("lb-b", "198.18.0.2", true, "ebpf-lb"));
    wait_for("second Ready pod in the node set", || {
        latest(&rx).nodes.as_ref().is_some_and(|n| n.len() == 2)
    })
    .await;
    task.abort();
}

fn count(fake: &FakeApiServer, resource: &str, verb: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.resource == resource && r.verb == verb)
        .count()
}

/// The whole kube mode of `ebpf-lb run`: provider, publisher, Lease, status and Events.
struct Controller {
    fake: FakeApiServer,
    _stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start_controller() -> Controller {
    let fake = FakeApiServer::start().await.expect("fake");
    seed(&fake);
    fake.apply(ingress("served", "ebpf-lb", "model", None));
    fake.apply(ingress("bad", "ebpf-lb", "missing-service", None));
    let mut stale = ingress("stale", "other-class", "model", None);
    stale["status"] = json!({"loadBalancer": {"ingress": [{"ip": VIP}, {"ip": "198.18.0.99"}]}});
    fake.apply(stale);

    let client = client(&fake);
    let opts = options();
    let provider = KubeProvider::start(&client, &opts).await.expect("ready");
    let publisher = Arc::new(Publisher::new(
        Arc::new(RouteStore::default()),
        ClassFilter::default(),
    ));
    let (tx, rx) = watch::channel(Arc::new(provider.update()));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = spawn_publishing(client, &opts, publisher, rx, stop_rx.clone());
    tasks.push(tokio::spawn(provider.run(tx, stop_rx)));
    Controller {
        fake,
        _stop: stop,
        tasks,
    }
}

fn status_ips(fake: &FakeApiServer, name: &str) -> Vec<String> {
    fake.get("ingresses", "ml", name)
        .and_then(|i| i["status"]["loadBalancer"]["ingress"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["ip"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_writes_status_and_events() {
    let c = start_controller().await;
    let fake = &c.fake;

    wait_for("Lease held by us", || {
        fake.get("leases", NS, LEASE_NAME)
            .is_some_and(|l| l["spec"]["holderIdentity"] == "ebpf-lb-test-0")
    })
    .await;
    wait_for("VIP in the served Ingress's status", || {
        status_ips(fake, "served") == [VIP]
    })
    .await;
    wait_for("our VIP taken out of an Ingress of another class", || {
        status_ips(fake, "stale") == ["198.18.0.99"]
    })
    .await;
    assert!(
        status_ips(fake, "bad").is_empty(),
        "a rejected Ingress gets no address"
    );
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.resource == "ingresses/status" && r.name.as_deref() == Some("served"))
        .expect("status patch recorded");
    assert_eq!(patch.method, "PATCH");
    assert!(
        patch.query.contains("fieldManager=ebpf-lb"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.body["status"]["loadBalancer"]["ingress"][0]["ip"],
        VIP
    );

    wait_for("an Event for the rejected Ingress", || {
        fake.requests().iter().any(|r| {
            r.resource == "events"
                && r.verb == "create"
                && r.body["involvedObject"]["name"] == "bad"
                && r.body["reason"] == "Rejected"
                && r.body["type"] == "Warning"
                && r.body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("missing-service"))
        })
    })
    .await;

    // The served Ingress moves to another class: its address goes away.
    let mut moved = fake.get("ingresses", "ml", "served").expect("served");
    moved["spec"]["ingressClassName"] = json!("other-class");
    fake.apply(moved);
    wait_for("VIP removed from an Ingress no longer served", || {
        status_ips(fake, "served").is_empty()
    })
    .await;
    let events = fake
        .requests()
        .iter()
        .filter(|r| r.resource == "events")
        .count();
    assert_eq!(events, 1, "a problem is posted once, not on every publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_table_matches_what_the_provider_does() {
    let c = start_controller().await;
    let fake = &c.fake;
    // Wait until every kind of call has happened once: renewals (update), status, Events.
    wait_for("every API call of the table", || {
        let used: BTreeSet<(String, String, String)> = fake
            .requests()
            .into_iter()
            .map(|r| (r.group, r.resource, r.verb))
            .collect();
        API_CALLS.iter().all(|(g, res, verbs)| {
            verbs
                .iter()
                .all(|v| used.contains(&(g.to_string(), res.to_string(), v.to_string())))
        })
    })
    .await;
    for r in fake.requests() {
        let allowed = API_CALLS.iter().any(|(g, res, verbs)| {
            *g == r.group && *res == r.resource && verbs.contains(&r.verb.as_str())
        });
        assert!(
            allowed,
            "{} {} {} is not in API_CALLS (deploy RBAC would refuse it)",
            r.verb, r.group, r.resource
        );
    }
}
