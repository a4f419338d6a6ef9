//! TLS termination: the certificate table translation builds from `kubernetes.io/tls`
//! Secrets, the SNI resolver that reads it from the live route-table snapshot on every
//! handshake (so certificate changes apply to new handshakes without touching open
//! connections), and the rustls server and upstream client configurations.
mod acceptor;
mod certs;
pub mod client_hello;
mod config;
mod resolver;
pub mod upstream;
pub mod x509;

pub use acceptor::{AcceptorError, acceptor};
pub use certs::{CertError, CertTable, ServedCert, certified_key_from_pem, self_signed};
pub use config::server_config;
pub use resolver::SniResolver;

/// ALPN protocol ids, in server preference order.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
