//! `ebpf-lb run`: wires the provider, translation, proxy, admin listener and dataplane
//! together, and shuts them down in order on SIGINT/SIGTERM.
use std::sync::{Arc, atomic::Ordering};

use anyhow::{Context as _, bail};
use tokio::{net::TcpListener, signal::unix, sync::watch};
use tracing::{info, warn};

use crate::{
    admin::{self, Readiness},
    cli::RunArgs,
    dataplane::{self, Dataplane},
    metrics::{Metrics, observe::Observer, upstream::UpstreamCollector, xdp::XdpCollector},
    provider::{
        self,
        kube::{self, KubeOptions, KubeProvider},
        watch::FilesProvider,
    },
    proxy::Proxy,
    publish::Publisher,
    routes::RouteStore,
    translate::ClassFilter,
};

/// Where configuration comes from.
enum Source {
    Files(FilesProvider),
    Kube(Box<(KubeProvider, ::kube::Client, KubeOptions)>),
}

/// `--default-ssl-certificate` as (namespace, name). A value that is not `namespace/name`
/// is refused with a warning (the self-signed certificate is served).
fn secret_ref(arg: Option<&str>) -> Option<(String, String)> {
    let s = arg?;
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Some((ns.to_owned(), name.to_owned()))
        }
        _ => {
            warn!(secret = s, "--default-ssl-certificate wants namespace/name");
            None
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    if args.iface.is_some() && args.vips.is_empty() {
        bail!("--iface needs at least one --vip: XDP only acts on traffic to a VIP");
    }
    let ready = Arc::new(Readiness::default());
    let routes = Arc::new(RouteStore::default());
    let classes = ClassFilter {
        class: args.manifests.ingress_class.clone(),
        without_class: args.manifests.watch_ingress_without_class,
        namespace: args.manifests.namespace.clone(),
    };
    let default_certificate = secret_ref(args.default_ssl_certificate.as_deref());

    // Configuration first: an unreadable directory or an unreachable API server is fatal,
    // a bad object is not.
    let (source, initial) = match &args.manifests.manifests {
        Some(dir) => {
            let mut provider = FilesProvider::new(dir);
            let initial = provider
                .poll()
                .with_context(|| format!("--manifests {}", dir.display()))?
                .unwrap_or_default();
            (Source::Files(provider), initial)
        }
        None => {
            let mut opts = KubeOptions::new(&args.manifests.namespace, kube::default_identity());
            opts.node_selector = args.manifests.node_selector.clone();
            opts.vips = args.vips.clone();
            opts.default_certificate = default_certificate.clone();
            let client = KubeProvider::default_client().await?;
            let provider = KubeProvider::start(&client, &opts)
                .await
                .context("kube provider")?;
            let initial = provider.update();
            (Source::Kube(Box::new((provider, client, opts))), initial)
        }
    };
    let mut metrics = Metrics::new();
    metrics
        .registry
        .register_collector(Box::new(UpstreamCollector {
            routes: routes.clone(),
        }));
    if args.iface.is_some() {
        metrics
            .registry
            .register_collector(Box::new(XdpCollector::new(args.bpffs.clone())));
    }
    let metrics = Arc::new(metrics);
    let publisher = Arc::new(
        Publisher::new(routes.clone(), classes)
            .with_metrics(metrics.clone())
            .with_default_certificate(default_certificate),
    );
    publisher.apply(&initial);
    ready.config_loaded.store(true, Ordering::Release);
    let tls = crate::tls::acceptor(routes.clone()).context("setting up the HTTPS listener")?;
    let (updates_tx, updates_rx) = watch::channel(Arc::new(initial));

    let listeners = crate::proxy::listen::Listeners::bind(
        args.http_listen,
        Some(args.https_listen),
        args.proxy_workers,
    )
    .with_context(|| {
        format!(
            "--http-listen {} / --https-listen {}: cannot bind",
            args.http_listen, args.https_listen
        )
    })?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}: cannot bind", args.admin_listen))?;
    ready.listeners_bound.store(true, Ordering::Release);

    let dataplane = match &args.iface {
        Some(iface) => {
            let mut dp = Dataplane::attach(iface, &args.bpffs, args.xdp_mode)
                .with_context(|| format!("attaching XDP to --iface {iface}"))?;
            let keys = dataplane::vip_keys(&args.vips, &[args.http_listen.port()]);
            dp.set_vips(&keys).context("filling the VIPS map")?;
            info!(vips = keys.len(), "VIPS map filled");
            if let Some(node_ip) = args.node_ip {
                dp.start_steering(dataplane::steering::Options {
                    node_ip,
                    peers: args.peers.clone(),
                    port: args.http_listen.port(),
                })
                .context("starting steering")?;
            }
            // The kernel policy of ConfigMap `ebpf-lb`, once here (a failure is fatal), then
            // on every update.
            let sync = dp.kernel_sync(&args.manifests.namespace);
            sync.try_apply(&updates_rx.borrow())
                .context("writing the kernel policy")?;
            let hook = sync.clone();
            publisher.set_update_hook(move |update| hook.apply(update));
            Some((dp, sync))
        }
        None => None,
    };
    ready.dataplane_ready.store(true, Ordering::Release);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let config_tasks = match source {
        Source::Files(provider) => vec![
            tokio::spawn(provider::watch::run(
                provider,
                updates_tx,
                shutdown_rx.clone(),
            )),
            tokio::spawn(publisher.run(updates_rx, shutdown_rx.clone())),
        ],
        Source::Kube(parts) => {
            let (provider, client, opts) = *parts;
            let mut tasks =
                kube::spawn_publishing(client, &opts, publisher, updates_rx, shutdown_rx.clone());
            tasks.push(tokio::spawn(provider.run(updates_tx, shutdown_rx.clone())));
            tasks
        }
    };
    let (observer, access_log_writer) = Observer::new(metrics.clone(), &args.access_log)
        .with_context(|| format!("--access-log {:?}: cannot open", args.access_log))?;
    if let Some(writer) = access_log_writer {
        tokio::spawn(writer);
    }
    let mut proxy = Proxy::new(routes.clone(), observer);
    proxy.limits.header_read_timeout = args.client_header_timeout;
    if let Some((_, sync)) = &dataplane {
        // The L7 rate limiter's repeat offenders are dropped in the kernel from then on.
        let sync = sync.clone();
        proxy.on_abuse = Some(Box::new(move |addr| sync.penalize(addr)));
    }
    let proxy = Arc::new(proxy);
    let serving = listeners
        .serve(&proxy, Some(tls), &shutdown_rx)
        .context("starting the proxy workers")?;
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::State {
            ready: ready.clone(),
            metrics,
            routes: routes.clone(),
        },
        shutdown_rx,
    ));
    info!(http = %args.http_listen, https = %args.https_listen, admin = %args.admin_listen, "serving");

    signals.wait().await;
    info!("shutting down: no new connections, draining in-flight requests");
    ready.listeners_bound.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    serving.join().await;
    let _ = admin_task.await;
    for task in config_tasks {
        let _ = task.await;
    }
    match dataplane {
        Some((dp, _)) if args.keep_attached => dp.release(),
        Some((dp, _)) => dp.detach().context("detaching XDP")?,
        None => {}
    }
    info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, installed first thing so a signal during start-up is a clean stop
/// (not the default action, which would kill the process with XDP attached).
struct Signals {
    term: unix::Signal,
    int: unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: unix::signal(unix::SignalKind::terminate())
                .context("installing SIGTERM handler")?,
            int: unix::signal(unix::SignalKind::interrupt())
                .context("installing SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM"),
            _ = self.int.recv() => info!("SIGINT"),
        }
    }
}
