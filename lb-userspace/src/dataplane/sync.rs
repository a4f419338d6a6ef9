//! Keeping the kernel in step with the configuration after start-up: every published
//! update re-applies ConfigMap `ebpf-lb`'s kernel policy (ACLs, limits, penalty time), and
//! the L7 rate limiter's abusive sources go into the `PENALTY` map.
use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use aya::Ebpf;
use tracing::{info, warn};

use super::{kernel, policy};
use crate::provider::Update;

/// A handle on the loaded object shared with the publisher and the proxy.
#[derive(Clone)]
pub struct KernelSync {
    ebpf: Arc<Mutex<Ebpf>>,
    namespace: String,
    /// `penalty-seconds` currently in force.
    penalty_seconds: Arc<AtomicU32>,
    /// Steering's peer set, when steering runs: fed from each update's node set.
    peers: Option<super::steering::PeerUpdates>,
}

impl KernelSync {
    pub fn new(
        ebpf: Arc<Mutex<Ebpf>>,
        namespace: &str,
        peers: Option<super::steering::PeerUpdates>,
    ) -> Self {
        Self {
            ebpf,
            namespace: namespace.to_owned(),
            peers,
            penalty_seconds: Arc::new(AtomicU32::new(
                policy::KernelPolicy::default().penalty_seconds,
            )),
        }
    }

    /// Applies the kernel policy of the update's ConfigMap `ebpf-lb` (diffed into the maps),
    /// and hands the update's node set (kube mode) to steering. A failed map write is
    /// logged and the previous policy stays (what every update after start-up does).
    pub fn apply(&self, update: &Update) {
        if let Err(e) = self.try_apply(update) {
            warn!(error = %e, "writing the kernel policy failed; the previous one stays");
        }
    }

    /// [`KernelSync::apply`], returning a failed map write (at start-up it is fatal).
    pub fn try_apply(&self, update: &Update) -> Result<(), super::DataplaneError> {
        if let (Some(peers), Some(nodes)) = (&self.peers, &update.nodes) {
            peers.set(nodes.clone());
        }
        let (p, errors) = policy::from_config_maps(&update.snapshot.config_maps, &self.namespace);
        for e in &errors {
            warn!(configmap = %e.configmap, key = e.key, "{}", e.message);
        }
        let mut p = p;
        if p.syn_cookie_threshold > 0 {
            let mode = super::steering::sysctl("net/ipv4/tcp_syncookies");
            if mode != Some(2) {
                warn!(
                    tcp_syncookies = ?mode,
                    "syn-cookie-threshold is set, but the kernel accepts the ACK of a cookie \
                     sent from XDP only with net.ipv4.tcp_syncookies=2 on this node (with 1 it \
                     needs a recent SYN-queue overflow first); XDP SYN cookies stay off and \
                     the kernel's own SYN cookies defend the listeners"
                );
                p.syn_cookie_threshold = 0;
            }
        }
        self.penalty_seconds
            .store(p.penalty_seconds, Ordering::Relaxed);
        let mut ebpf = self
            .ebpf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kernel::write_policy(&mut ebpf, &p)
    }

    /// Puts `addr` into the XDP penalty box for `penalty-seconds` (0: penalties are off).
    pub fn penalize(&self, addr: IpAddr) {
        let secs = self.penalty_seconds.load(Ordering::Relaxed);
        if secs == 0 {
            return;
        }
        let mut ebpf = self
            .ebpf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match kernel::penalize(&mut ebpf, addr, Duration::from_secs(u64::from(secs))) {
            Ok(()) => info!(%addr, secs, "abusive source sent to the XDP penalty box"),
            Err(e) => warn!(%addr, error = %e, "could not add to the penalty box"),
        }
    }
}
