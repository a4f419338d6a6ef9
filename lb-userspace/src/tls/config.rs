//! The rustls server configuration of the HTTPS listener.
use std::sync::Arc;

use rustls::{ServerConfig, server::ServerSessionMemoryCache, version};

use super::{ALPN_H2, ALPN_HTTP11, SniResolver};

/// Session-ID cache entries kept for TLS 1.2 clients that do not use tickets.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// TLS 1.2 and 1.3 only, ALPN h2 then http/1.1, SNI through `resolver`, resumption by
/// session tickets (rotating ticket keys) and a session-ID cache.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    // TLS 1.3: two tickets per full handshake, as browsers open parallel connections.
    cfg.send_tls13_tickets = 2;
    Ok(cfg)
}
