//! The rustls server configuration of the HTTPS listener.
use std::sync::Arc;

use rustls::{
    CipherSuite, ServerConfig, SupportedCipherSuite, crypto::CryptoProvider,
    server::ServerSessionMemoryCache, version,
};

use super::{ALPN_H2, ALPN_HTTP11, SniResolver};

/// Session-ID cache entries kept for TLS 1.2 clients that do not use tickets.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// TLS 1.2 and 1.3 only, ALPN h2 then http/1.1, SNI through `resolver`, resumption by
/// session tickets (rotating ticket keys) and a session-ID cache, and the cipher suite
/// chosen by [`server_provider`]'s order.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(server_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    // TLS 1.3: two tickets per full handshake, as browsers open parallel connections.
    cfg.send_tls13_tickets = 2;
    // The server's suite order decides, not the client's (as Go's crypto/tls does, and
    // ingress-nginx with its default `ssl-prefer-server-ciphers: "true"`).
    cfg.ignore_client_order = true;
    Ok(cfg)
}

/// aws-lc-rs's suites and key exchange groups (the sets rustls enables by default),
/// AES-128-GCM first, then ChaCha20-Poly1305, then AES-256-GCM, for TLS 1.3 and 1.2 alike.
///
/// Why aws-lc-rs rather than ring: a full handshake's CPU is mostly X25519 and the ECDSA
/// signature. ring's X25519 (fiat-crypto field arithmetic) was a third of our handshake
/// CPU with OpenSSL clients; aws-lc's (s2n-bignum) costs about half as much, and its
/// P-256 signing is no slower.
///
/// Why AES-128 first: OpenSSL clients (curl, Python, most SDKs) list AES-256-GCM-SHA384
/// first, and SHA-384 has no hardware instructions (SHA-NI covers SHA-256 only), so a
/// full handshake that follows them spends 6-13% of its CPU in SHA-512 blocks (its key
/// schedule and two session tickets), against well under 1% with SHA-256. AES-128-GCM is
/// also the cheaper cipher for bulk data, and it is what browsers offer first anyway. A
/// client that offers only AES-256 still gets it.
pub fn server_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(preference);
    provider
}

/// Rank of a suite in the server's order (lower first); stable for equal ranks, so the
/// provider's ECDSA-before-RSA order of TLS 1.2 suites stays.
fn preference(suite: &SupportedCipherSuite) -> u8 {
    match suite.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        CipherSuite::TLS13_AES_256_GCM_SHA384 => 2,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::{
        ClientConfig, ClientConnection, RootCertStore, ServerConnection,
        crypto::aws_lc_rs::cipher_suite as cs, pki_types::CertificateDer,
    };

    use super::*;
    use crate::{routes::RouteStore, tls::self_signed};

    /// The suite a client offering `offered` (in its order of preference) ends up with,
    /// over a real handshake in memory.
    fn negotiated(
        offered: &[SupportedCipherSuite],
        version: &'static rustls::SupportedProtocolVersion,
    ) -> CipherSuite {
        let (key, cert_pem, _) = self_signed(&["lb.test"]).expect("self-signed certificate");
        let resolver = Arc::new(SniResolver::new(
            Arc::new(RouteStore::default()),
            Arc::new(key),
        ));
        let server_cfg = Arc::new(server_config(resolver).expect("server config"));
        let mut roots = RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes()) {
            let cert: CertificateDer = cert.expect("certificate PEM");
            roots.add(cert).expect("root");
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = offered.to_vec();
        let client_cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .expect("client versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "lb.test".try_into().expect("server name");
        let mut client = ClientConnection::new(Arc::new(client_cfg), name).expect("client");
        let mut server = ServerConnection::new(server_cfg).expect("server");
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("client writes");
            server.read_tls(&mut buf.as_slice()).expect("server reads");
            server.process_new_packets().expect("server accepts");
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("server writes");
            client.read_tls(&mut buf.as_slice()).expect("client reads");
            client.process_new_packets().expect("client accepts");
        }
        // Data flows both ways under the chosen suite.
        client.writer().write_all(b"ping").expect("client data");
        let mut buf = Vec::new();
        client.write_tls(&mut buf).expect("client writes");
        server.read_tls(&mut buf.as_slice()).expect("server reads");
        server.process_new_packets().expect("server decrypts");
        let mut got = [0u8; 4];
        server
            .reader()
            .read_exact(&mut got)
            .expect("server reads data");
        assert_eq!(&got, b"ping");
        let suite = server.negotiated_cipher_suite().expect("a suite");
        assert_eq!(
            client.negotiated_cipher_suite().map(|s| s.suite()),
            Some(suite.suite())
        );
        suite.suite()
    }

    #[test]
    fn server_order_picks_aes128_over_the_clients_aes256() {
        use rustls::version::{TLS12, TLS13};
        // OpenSSL's client order: AES-256 first.
        let openssl_like = [
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiated(&openssl_like, &TLS13),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            negotiated(&openssl_like, &TLS12),
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
        // ChaCha20 before AES-256 when the client has no AES-128.
        assert_eq!(
            negotiated(
                &[
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256
                ],
                &TLS13
            ),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        // A client that offers only AES-256 still connects.
        assert_eq!(
            negotiated(&[cs::TLS13_AES_256_GCM_SHA384], &TLS13),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
    }

    #[test]
    fn every_default_suite_stays_enabled() {
        let mut ours: Vec<_> = server_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut default: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours.first(), Some(&CipherSuite::TLS13_AES_128_GCM_SHA256));
        ours.sort_by_key(|s| u16::from(*s));
        default.sort_by_key(|s| u16::from(*s));
        assert_eq!(ours, default);
    }
}
