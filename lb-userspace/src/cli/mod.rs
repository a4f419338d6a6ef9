//! Command-line interface of the `ebpf-lb` binary.
use std::{net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::dataplane::XdpAttachMode;

#[derive(Debug, Parser)]
#[command(
    name = "ebpf-lb",
    version,
    about = "eBPF-accelerated L4/L7 load balancer and Kubernetes ingress controller",
    after_help = "Examples:\n  \
        ebpf-lb run --manifests examples/demo --http-listen 127.0.0.1:8080\n  \
        ebpf-lb run --manifests DIR --iface eth0 --vip 192.168.1.210\n  \
        ebpf-lb run --namespace ebpf-lb --vip 192.168.1.210   (kube provider)\n  \
        ebpf-lb check --manifests examples/demo\n  \
        ebpf-lb routes --manifests examples/demo\n  \
        ebpf-lb maps --bpffs /sys/fs/bpf/ebpf-lb"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
// `allow`, not `expect`: whether the lint fires depends on which flags are in at the time.
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; boxing RunArgs would only add noise"
)]
pub enum Command {
    /// Run the daemon: serve HTTP, and attach XDP when --iface is given.
    Run(RunArgs),
    /// Validate manifests: print every problem as `namespace/name: field: message`;
    /// exit 1 if any object is rejected.
    Check(ManifestArgs),
    /// Print the route table the manifests produce.
    Routes(ManifestArgs),
    /// Print the pinned BPF maps: VIPs and their counters, the node table, the Maglev
    /// distribution per node, a sample of the flow table, rate-limit buckets and the
    /// penalty box (as `bpftool map dump` shows them, in human form).
    Maps {
        /// Directory holding the pinned maps.
        #[arg(long, default_value = "/sys/fs/bpf/ebpf-lb")]
        bpffs: PathBuf,
        /// Rows listed per hash map (FLOWS, SOURCES, PENALTY); every entry is counted.
        #[arg(long, default_value_t = 20)]
        sample: usize,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json; multi-document).
    #[arg(long)]
    pub manifests: PathBuf,
    /// IngressClass name this controller serves.
    #[arg(long, default_value = "ebpf-lb")]
    pub ingress_class: String,
    /// Also serve Ingresses that name no class.
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// The controller's namespace: where ConfigMap `ebpf-lb` (global settings) is read.
    #[arg(long, default_value = "ebpf-lb")]
    pub namespace: String,
}

/// Where `run` reads its configuration: `--manifests DIR`, else the Kubernetes API.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json; multi-document). Without it: the kube
    /// provider, from the in-cluster configuration or KUBECONFIG.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// IngressClass name this controller serves.
    #[arg(long, default_value = "ebpf-lb")]
    pub ingress_class: String,
    /// Also serve Ingresses that name no class.
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// The controller's namespace (ConfigMap `ebpf-lb`, Lease `ebpf-lb-leader`, its pods).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ebpf-lb")]
    pub namespace: String,
    /// Label selector of the DaemonSet's pods: their Ready pods' host IPs are the node set.
    #[arg(long, default_value = "app.kubernetes.io/name=ebpf-lb")]
    pub node_selector: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub manifests: SourceArgs,
    /// Plain HTTP listener.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// HTTPS listener: TLS 1.2/1.3, certificates by SNI from the Ingresses' spec.tls,
    /// ALPN h2 and http/1.1.
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https_listen: SocketAddr,
    /// Certificate for names without one (a kubernetes.io/tls Secret, namespace/name);
    /// without it a self-signed certificate is generated at start.
    #[arg(long)]
    pub default_ssl_certificate: Option<String>,
    /// Proxy worker threads, each with its own runtime and SO_REUSEPORT sockets
    /// (0: one per CPU the process may run on).
    #[arg(long, default_value_t = 0)]
    pub proxy_workers: usize,
    /// Time a client gets to send a complete request head (slowloris), as nginx's
    /// client_header_timeout; it also bounds a new connection's first bytes (protocol
    /// detection, the h2 preface). nginx time syntax: 30, 30s, 500ms, 1m. On expiry the
    /// connection is closed.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub client_header_timeout: Duration,
    /// Admin listener: /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:10254")]
    pub admin_listen: SocketAddr,
    /// Attach the XDP program to this interface (without it: userspace only).
    #[arg(long)]
    pub iface: Option<String>,
    /// A VIP this node serves (repeatable); its listening ports go into the VIPS map.
    #[arg(long = "vip")]
    pub vips: Vec<IpAddr>,
    /// bpffs directory for pinned maps.
    #[arg(long, default_value = "/sys/fs/bpf/ebpf-lb")]
    pub bpffs: PathBuf,
    /// Access log: one JSON line per request to `stdout`, a file PATH, or `off`.
    #[arg(long, default_value = "stdout")]
    pub access_log: crate::metrics::observe::AccessLogTarget,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpAttachMode::Auto)]
    pub xdp_mode: XdpAttachMode,
    /// This node's address: outer source of steered packets, its own entry in the node set.
    /// With --iface, turns on Maglev steering between this node and the --peer nodes.
    #[arg(long, env = "NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Another proxy node (repeatable; files mode). Health-checked on the proxy port.
    #[arg(long = "peer")]
    pub peers: Vec<IpAddr>,
    /// On exit, leave lb_xdp and lb_tc_decap attached (pinned links under --bpffs) so a
    /// restarted daemon takes over without breaking established flows.
    #[arg(long)]
    pub keep_attached: bool,
}

/// A positive duration in nginx time syntax (`30`, `30s`, `500ms`, `1m`, `1h`).
fn positive_duration(v: &str) -> Result<Duration, String> {
    match crate::translate::annotations::upstream::parse_duration(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{v:?} is not a positive duration (e.g. 30, 30s, 500ms, 1m)"
        )),
    }
}
