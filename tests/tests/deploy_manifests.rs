//! The deploy manifests and the MLOps examples, checked the way CI can without a cluster:
//! each kustomize overlay renders (`kubectl kustomize`), every rendered object validates
//! against the Kubernetes schemas (`kubernetes-validate --strict`, pinned in
//! deploy/validate-requirements.txt; the MetalLB and Prometheus Operator CRDs have no schema
//! there, so they are checked structurally here), the RBAC grants exactly the kube
//! provider's `API_CALLS`, the DaemonSet's arguments parse with the real CLI, the ConfigMap
//! holds exactly the kernel-policy keys, and `ebpf-lb check` accepts examples/mlops.
//!
//! Tools come from `cargo xtask setup` (kubectl from Debian's kubernetes-client, the
//! kubernetes-validate venv under target/venv); a missing tool fails the test, it never skips.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use clap::Parser as _;
use lb_userspace::{
    cli::{Cli, Command as CliCommand},
    provider::kube::{API_CALLS, CONFIG_MAP_NAME, LEASE_NAME},
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn venv_bin(name: &str) -> PathBuf {
    let p = root().join("target/venv/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo xtask setup` (it creates target/venv with the pinned \
         kubernetes-validate)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start ({e}): run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `kubectl kustomize DIR`, as YAML.
fn render(dir: &str) -> String {
    run(Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join(dir)))
}

/// YAML documents as JSON values (PyYAML from the validation venv: the tests crate has no
/// YAML parser of its own).
fn parse_yaml(yaml: &str) -> Vec<Value> {
    let dir = scratch();
    // Tests run on several threads of one process: one file per call.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let file = dir.join(format!("parse-{}-{n}.yaml", std::process::id()));
    std::fs::write(&file, yaml).expect("write yaml");
    let json = run(Command::new(venv_bin("python")).args([
        "-c",
        "import sys, json, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         json.dump(docs, sys.stdout)",
        file.to_str().expect("utf-8 path"),
    ]));
    let _ = std::fs::remove_file(&file);
    match serde_json::from_str(&json).expect("json from python") {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

fn scratch() -> PathBuf {
    let dir = root().join("target/deploy-check");
    std::fs::create_dir_all(&dir).expect("target/deploy-check");
    dir
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn find<'a>(objs: &'a [Value], k: &str, n: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k} {n} rendered"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Kinds whose schema kubernetes-validate does not have (CRDs), checked structurally below.
const CRDS: &[&str] = &[
    "IPAddressPool",
    "L2Advertisement",
    "BGPAdvertisement",
    "BGPPeer",
    "ServiceMonitor",
];

#[test]
fn overlays_render_and_validate_against_the_kubernetes_schemas() {
    for (overlay, advertisement) in [("l2", "L2Advertisement"), ("bgp", "BGPAdvertisement")] {
        let yaml = render(&format!("deploy/overlays/{overlay}"));
        let file = scratch().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).expect("write rendered overlay");
        let report = run(Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "--no-warn"])
            .arg(&file));
        let objs = parse_yaml(&yaml);
        // Every object with a schema passed; CRDs are the only ones without.
        for o in &objs {
            let k = kind(o);
            if CRDS.contains(&k) {
                continue;
            }
            let needle = format!("passed for resource {}/{}", k.to_lowercase(), name(o));
            assert!(
                report.contains(&needle),
                "{overlay}: {k} {} was not validated:\n{report}",
                name(o)
            );
        }
        let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
        for k in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "IngressClass",
            "ConfigMap",
            "DaemonSet",
            "Service",
            "ServiceMonitor",
            "PodDisruptionBudget",
            "IPAddressPool",
            advertisement,
        ] {
            assert!(kinds.contains(k), "{overlay}: no {k} rendered");
        }
        check_metallb(&objs, advertisement);
        check_service_monitor(&objs);
    }
}

/// The pool holds exactly the VIP, the advertisement names the pool, and the Service asks
/// MetalLB for that address from that pool.
fn check_metallb(objs: &[Value], advertisement: &str) {
    let pool = find(objs, "IPAddressPool", "ebpf-lb");
    assert_eq!(pool["apiVersion"], "metallb.io/v1beta1");
    assert_eq!(strings(&pool["spec"]["addresses"]), ["192.168.1.210/32"]);
    assert_eq!(pool["spec"]["autoAssign"], false);
    let adv = find(objs, advertisement, "ebpf-lb");
    assert_eq!(adv["apiVersion"], "metallb.io/v1beta1");
    assert_eq!(strings(&adv["spec"]["ipAddressPools"]), ["ebpf-lb"]);
    for o in [pool, adv] {
        assert_eq!(o["metadata"]["namespace"], "metallb-system");
    }
    if advertisement == "BGPAdvertisement" {
        let peer = objs
            .iter()
            .find(|o| kind(o) == "BGPPeer")
            .expect("a BGPPeer example");
        assert_eq!(peer["apiVersion"], "metallb.io/v1beta2");
        for field in ["myASN", "peerASN", "peerAddress"] {
            assert!(!peer["spec"][field].is_null(), "BGPPeer without {field}");
        }
    }
    let svc = find(objs, "Service", "ebpf-lb");
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["metallb.universe.tf/loadBalancerIPs"], "192.168.1.210");
    assert_eq!(ann["metallb.universe.tf/address-pool"], "ebpf-lb");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    let ports: BTreeSet<i64> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, BTreeSet::from([80, 443]));
}

/// The ServiceMonitor selects a Service that has its port, and that Service selects the
/// DaemonSet's pods.
fn check_service_monitor(objs: &[Value]) {
    let sm = find(objs, "ServiceMonitor", "ebpf-lb");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let want = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let port = sm["spec"]["endpoints"][0]["port"].as_str().expect("port");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = objs
        .iter()
        .filter(|o| kind(o) == "Service")
        .find(|s| want.iter().all(|(k, v)| s["metadata"]["labels"][k] == *v))
        .expect("a Service the ServiceMonitor selects");
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port)
        .expect("the ServiceMonitor's port on the Service");
    assert_eq!(svc_port["port"], 10254, "metrics are on --admin-listen");
    let ds = find(objs, "DaemonSet", "ebpf-lb");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v);
    }
}

/// (group, resource, verb) granted, from the rules of one role.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    assert_ne!(v, "*", "wildcard verb in {}", name(role));
                    assert_ne!(r, "*", "wildcard resource in {}", name(role));
                    out.insert((g.to_owned(), r.to_owned(), v.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_kube_providers_api_calls() {
    let objs = parse_yaml(&render("deploy/base"));
    let sa = find(&objs, "ServiceAccount", "ebpf-lb");
    let ns = sa["metadata"]["namespace"].as_str().expect("SA namespace");
    // Both roles are bound to the DaemonSet's ServiceAccount, the Role in its namespace.
    for (binding, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = find(&objs, binding, "ebpf-lb");
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], "ebpf-lb");
        let subjects = b["subjects"].as_array().expect("subjects");
        assert_eq!(subjects.len(), 1, "{binding}: one subject");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], "ebpf-lb");
        assert_eq!(subjects[0]["namespace"], ns);
    }
    let ds = find(&objs, "DaemonSet", "ebpf-lb");
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        "ebpf-lb"
    );
    let cluster_role = find(&objs, "ClusterRole", "ebpf-lb");
    let role = find(&objs, "Role", "ebpf-lb");
    assert_eq!(role["metadata"]["namespace"], ns);

    let cluster = grants(cluster_role);
    let local = grants(role);
    let granted: BTreeSet<_> = cluster.union(&local).cloned().collect();
    let used: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "RBAC and API_CALLS differ:\n  missing (the provider calls, RBAC refuses): \
         {missing:?}\n  extra (granted, never called): {extra:?}"
    );

    // What the provider reads only in its own namespace is granted only there.
    for (g, r, v) in &cluster {
        assert!(
            !["pods", "leases"].contains(&r.as_str()),
            "ClusterRole grants {v} {g}/{r}: the provider needs it in {ns} only (Role)"
        );
    }
    // Names, where RBAC can restrict them, are the provider's.
    let names: BTreeMap<&str, &str> = [("leases", LEASE_NAME)].into_iter().collect();
    for rule in role["rules"].as_array().expect("rules") {
        let restricted = strings(&rule["resourceNames"]);
        if restricted.is_empty() {
            continue;
        }
        assert!(
            !strings(&rule["verbs"]).contains(&"create"),
            "create cannot be restricted by resourceNames"
        );
        for r in strings(&rule["resources"]) {
            let want = names
                .get(r)
                .unwrap_or_else(|| panic!("unexpected resourceNames on {r}"));
            assert_eq!(restricted, [*want], "resourceNames of {r}");
        }
    }
}

#[test]
fn daemonset_matches_the_cli_and_the_contract() {
    let objs = parse_yaml(&render("deploy/base"));
    let ds = find(&objs, "DaemonSet", "ebpf-lb");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let c = &pod["containers"][0];
    let args: Vec<String> = strings(&c["args"]).into_iter().map(String::from).collect();
    // The arguments parse with the real CLI (a renamed or removed flag fails here, not in
    // a crash-looping pod).
    let cli = Cli::try_parse_from(std::iter::once("ebpf-lb".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("DaemonSet args {args:?} do not parse: {e}"));
    let CliCommand::Run(run) = cli.command else {
        panic!("the DaemonSet must run `ebpf-lb run`");
    };
    assert!(
        run.manifests.manifests.is_none(),
        "kube provider: no --manifests"
    );
    assert!(run.iface.is_some(), "--iface attaches XDP");
    let vip: std::net::IpAddr = "192.168.1.210".parse().expect("an address");
    assert_eq!(run.vips, [vip]);
    assert_eq!(run.admin_listen.port(), 10254);
    assert_eq!(run.bpffs, Path::new("/sys/fs/bpf/ebpf-lb"));

    let env: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(env.get("NODE_IP"), Some(&"status.hostIP"));
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE"), Some(&"metadata.namespace"));

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], 10254);
    }
    assert!(!c["lifecycle"]["preStop"].is_null(), "preStop drain");
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["resources"]["requests"]["memory"], "200Mi");

    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<&str> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    assert_eq!(
        added,
        BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE"])
    );
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/bpf")
        .expect("bpffs mounted");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("bpffs volume");
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(
        ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "ebpf-lb"
    );

    let class = find(&objs, "IngressClass", "ebpf-lb");
    assert_eq!(class["spec"]["controller"], "ebpf-lb.io/ingress-controller");
    let pdb = find(&objs, "PodDisruptionBudget", "ebpf-lb");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
}

#[test]
fn configmap_holds_exactly_the_kernel_policy_keys_and_parses() {
    let objs = parse_yaml(&render("deploy/base"));
    let cm = find(&objs, "ConfigMap", CONFIG_MAP_NAME);
    let data: BTreeMap<String, String> = cm["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect();
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = lb_userspace::dataplane::policy::KEYS.into_iter().collect();
    assert_eq!(
        keys, want,
        "ConfigMap keys and the kernel policy's KEYS differ"
    );
    let (policy, errors) = lb_userspace::dataplane::policy::parse("ebpf-lb/ebpf-lb", &data);
    assert!(errors.is_empty(), "{errors:?}");
    // Safe defaults: nothing is dropped until an operator turns a limit on.
    assert!(policy.deny.is_empty() && policy.allow.is_empty());
    assert_eq!(
        (policy.conn_rate, policy.pps, policy.syn_cookie_threshold),
        (0, 0, 0)
    );
}

#[test]
fn ebpf_lb_check_accepts_examples_mlops() {
    let bin = tests::local::ebpf_lb_bin(Path::new(env!("CARGO_BIN_EXE_echo-backend")));
    let out = Command::new(bin)
        .args(["check", "--manifests"])
        .arg(root().join("examples/mlops"))
        .output()
        .expect("run ebpf-lb check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ebpf-lb check rejected examples/mlops:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("0 rejected") && stdout.contains("0 error(s)"),
        "{stdout}"
    );
    // Every Ingress of the examples is accepted (a file that stopped parsing would drop them).
    let ingresses = parse_yaml(
        &std::fs::read_dir(root().join("examples/mlops/gateway"))
            .expect("examples/mlops/gateway")
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .into_iter()
    .filter(|o| kind(o) == "Ingress")
    .count();
    assert!(
        stdout.contains(&format!("{ingresses} Ingress(es) accepted")),
        "expected {ingresses} accepted:\n{stdout}"
    );
}

#[test]
fn examples_mlops_validate_against_the_kubernetes_schemas() {
    // The gateway directory is what a user applies to a cluster; the stand-ins too must be
    // valid objects.
    for dir in ["gateway", "standins"] {
        let path = root().join("examples/mlops").join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .expect("examples dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let report = run(Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "--no-warn"])
            .args(&files));
        assert!(!report.contains("ERROR"), "{report}");
        for f in &files {
            let objs = parse_yaml(&std::fs::read_to_string(f).expect("read"));
            for o in &objs {
                let needle = format!("passed for resource {}/{}", kind(o).to_lowercase(), name(o));
                assert!(
                    report.contains(&needle),
                    "{}: {needle} missing:\n{report}",
                    f.display()
                );
            }
        }
    }
}
