//! SNI certificate choice, read from the route-table snapshot current at each handshake.
use std::sync::Arc;

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::routes::RouteStore;

/// Picks the certificate for a ClientHello: the route table's certificate for the SNI name
/// (exact, then wildcard; a `server-alias` gets its host's), else the table's default
/// (`--default-ssl-certificate`), else the self-signed certificate generated at start.
#[derive(Debug)]
pub struct SniResolver {
    routes: Arc<RouteStore>,
    self_signed: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(routes: Arc<RouteStore>, self_signed: Arc<CertifiedKey>) -> Self {
        Self {
            routes,
            self_signed,
        }
    }

    /// The certificate served for `server_name` (None: no SNI) right now.
    pub fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let table = self.routes.load();
        server_name
            .and_then(|name| table.certificate_for(name))
            .or(table.default_certificate.as_ref())
            .unwrap_or(&self.self_signed)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}
