//! The HTTPS listener's acceptor: the default certificate (`--default-ssl-certificate
//! ns/name`, else a self-signed one generated now) behind the SNI resolver.
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::{CertError, SniResolver, self_signed, server_config};
use crate::{provider::Snapshot, routes::RouteStore, translate::tls::load_secret};

/// Why the HTTPS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for the HTTPS listener. `default_secret` is `namespace/name`; when it is
/// missing or unusable the self-signed certificate is served instead (and a warning says
/// why), as ingress-nginx does with its fake certificate.
pub fn acceptor(
    routes: Arc<RouteStore>,
    snapshot: &Snapshot,
    default_secret: Option<&str>,
) -> Result<TlsAcceptor, AcceptorError> {
    let from_secret = default_secret.and_then(|s| {
        let Some((ns, name)) = s.split_once('/') else {
            warn!(secret = s, "--default-ssl-certificate wants namespace/name");
            return None;
        };
        match load_secret(snapshot, ns, name) {
            Ok(k) => {
                info!(secret = s, "default certificate loaded");
                Some(k)
            }
            Err(e) => {
                warn!(secret = s, error = %e, "default certificate unusable; serving a self-signed one");
                None
            }
        }
    });
    let default = match from_secret {
        Some(k) => k,
        None => self_signed(&["ebpf-lb.invalid"])?.0,
    };
    let resolver = Arc::new(SniResolver::new(routes, Arc::new(default)));
    Ok(TlsAcceptor::from(Arc::new(server_config(resolver)?)))
}
