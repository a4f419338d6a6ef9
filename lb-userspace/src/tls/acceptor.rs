//! The HTTPS listener's acceptor: the SNI resolver over the route table, with a self-signed
//! certificate generated now for names nothing else covers (`--default-ssl-certificate`
//! comes with each route table: see `publish::Publisher::with_default_certificate`), as
//! ingress-nginx serves its fake certificate.
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use super::{CertError, SniResolver, self_signed, server_config};
use crate::routes::RouteStore;

/// Why the HTTPS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for the HTTPS listener.
pub fn acceptor(routes: Arc<RouteStore>) -> Result<TlsAcceptor, AcceptorError> {
    let fallback = self_signed(&["ebpf-lb.invalid"])?.0;
    let resolver = Arc::new(SniResolver::new(routes, Arc::new(fallback)));
    Ok(TlsAcceptor::from(Arc::new(server_config(resolver)?)))
}
