//! The shutdown signal shared by every listener: a `watch` channel that turns `true` once.

use tokio::sync::watch;

/// Resolves once shutdown has begun (or the sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
