//! Leader election on a coordination.k8s.io/v1 Lease, so that one pod of the DaemonSet writes
//! Ingress status and Events while every pod serves traffic.
//!
//! Expiry is judged by the local clock since this process last saw the lease change (as
//! client-go does), never by comparing `renewTime` with our clock: node clocks drift.
//! Updates carry the `resourceVersion` read, so two candidates racing for an expired lease
//! cannot both win (the loser gets 409 Conflict and reads again).
use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt as _},
};
use tokio::sync::watch;
use tracing::{info, warn};

/// Name of the Lease in the controller's namespace.
pub const LEASE_NAME: &str = "ebpf-lb-leader";

/// How long a lease lasts without renewal, and how often the holder renews it.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// What this candidate last saw of the lease.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

/// Acquires and renews the lease until shutdown, publishing whether we hold it. Leadership
/// is given up (and reported as lost) as soon as a renewal fails.
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    timing: LeaseTiming,
    is_leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut observed: Option<Observed> = None;
    loop {
        let leading = match try_acquire_or_renew(&api, &identity, timing, &mut observed).await {
            Ok(leading) => leading,
            Err(e) => {
                warn!(error = %e, lease = LEASE_NAME, "lease renewal failed");
                false
            }
        };
        is_leader.send_if_modified(|was| {
            if *was != leading {
                info!(leading, identity = %identity, "leadership changed");
                *was = leading;
                return true;
            }
            false
        });
        tokio::select! {
            _ = tokio::time::sleep(timing.renew_every) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        }
    }
    if *is_leader.borrow() {
        let _ = release(&api, &identity).await;
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    identity: &str,
    timing: LeaseTiming,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: Some(spec(identity, timing, now.clone(), now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.clone().filter(|h| !h.is_empty());
    let changed = observed
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew_time != current.renew_time);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew_time: current.renew_time.clone(),
            since: Instant::now(),
        });
    }
    let ours = holder.as_deref() == Some(identity);
    let duration = current
        .lease_duration_seconds
        .map_or(timing.duration, |s| Duration::from_secs(s.max(1) as u64));
    let expired = holder.is_none()
        || observed
            .as_ref()
            .is_some_and(|o| o.since.elapsed() >= duration);
    if !ours && !expired {
        return Ok(false);
    }
    let (acquired, transitions) = if ours {
        (
            current.acquire_time.clone().unwrap_or_else(|| now.clone()),
            current.lease_transitions.unwrap_or(0),
        )
    } else {
        (now.clone(), current.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(spec(identity, timing, acquired, now, transitions));
    match api
        .replace(&lease.name_any(), &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn spec(
    identity: &str,
    timing: LeaseTiming,
    acquired: MicroTime,
    renewed: MicroTime,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(timing.duration.as_secs().max(1) as i32),
        acquire_time: Some(acquired),
        renew_time: Some(renewed),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Hands the lease over on shutdown: another pod takes it at its next attempt instead of
/// waiting for expiry.
async fn release(api: &Api<Lease>, identity: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    api.replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}
