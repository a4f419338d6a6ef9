//! Certificates by server name: exact hosts and single-label `*.` wildcards (exact wins),
//! as the Ingress spec matches `spec.tls[].hosts`.
use std::{collections::HashMap, sync::Arc};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `tls.crt` held no PEM certificate.
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    /// A PEM block of `tls.crt` or `tls.key` did not parse.
    #[error("{file} is not valid PEM: {source}")]
    Pem {
        file: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The private key's type is not supported (RSA, ECDSA P-256/P-384 and Ed25519 are).
    #[error("tls.key: unsupported private key: {0}")]
    Key(#[source] rustls::Error),
    /// The self-signed fallback certificate could not be generated.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[source] rcgen::Error),
}

/// Parses a PEM certificate chain and private key into a key rustls can serve.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            file: "tls.crt",
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| CertError::Pem {
        file: "tls.key",
        source,
    })?;
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(CertError::Key)?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A self-signed ECDSA P-256 certificate for `names`, plus its PEM (cert, key).
pub fn self_signed(names: &[&str]) -> Result<(CertifiedKey, String, String), CertError> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).map_err(CertError::Generate)?;
    let cert_pem = generated.cert.pem();
    let key_pem = generated.signing_key.serialize_pem();
    let key = certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
    Ok((key, cert_pem, key_pem))
}

/// Certificates by server name, built by `translate::tls`.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Which Secret each host's certificate came from (for the certificate metrics).
    served: Vec<ServedCert>,
}

/// A host and the `kubernetes.io/tls` Secret whose certificate it is served with.
#[derive(Clone, Debug)]
pub struct ServedCert {
    /// As written in `spec.tls[].hosts` (lower case; wildcards as `*.suffix`).
    pub host: String,
    pub namespace: String,
    pub secret_name: String,
    pub key: Arc<CertifiedKey>,
}

impl CertTable {
    /// Adds `host` (`a.example` or `*.example`); the first certificate for a host wins.
    /// Returns false when the host already had one.
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) -> bool {
        let host = host.to_ascii_lowercase();
        let map = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_owned()),
            None => (&mut self.exact, host),
        };
        match map.0.entry(map.1) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key);
                true
            }
        }
    }

    /// [`Self::insert`], remembering that the certificate is Secret `namespace/secret_name`.
    pub fn insert_from_secret(
        &mut self,
        host: &str,
        key: Arc<CertifiedKey>,
        namespace: &str,
        secret_name: &str,
    ) -> bool {
        if !self.insert(host, key.clone()) {
            return false;
        }
        self.served.push(ServedCert {
            host: host.to_ascii_lowercase(),
            namespace: namespace.to_owned(),
            secret_name: secret_name.to_owned(),
            key,
        });
        true
    }

    /// Every host inserted with [`Self::insert_from_secret`], in insertion order.
    pub fn served(&self) -> &[ServedCert] {
        &self.served
    }

    /// The certificate for an SNI name (any case), exact before wildcard.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let lower;
        let name = if server_name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = server_name.to_ascii_lowercase();
            lower.as_str()
        } else {
            server_name
        };
        if let Some(k) = self.exact.get(name) {
            return Some(k);
        }
        let (_, suffix) = name.split_once('.')?;
        self.wildcard.get(suffix)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Host names with a certificate, sorted (wildcards as `*.suffix`).
    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .exact
            .keys()
            .cloned()
            .chain(self.wildcard.keys().map(|s| format!("*.{s}")))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        Arc::new(self_signed(&[name]).expect("self-signed").0)
    }

    #[test]
    fn exact_beats_wildcard_and_wildcard_covers_one_label() {
        let mut t = CertTable::default();
        let (exact, wild) = (key("a.example.com"), key("*.example.com"));
        assert!(t.insert("A.example.com", exact.clone()));
        assert!(t.insert("*.example.com", wild.clone()));
        assert!(!t.insert("a.example.com", wild.clone()), "first one wins");
        let is = |name: &str, k: &Arc<CertifiedKey>| {
            t.lookup(name).is_some_and(|got| Arc::ptr_eq(got, k))
        };
        assert!(is("a.example.com", &exact));
        assert!(is("A.EXAMPLE.COM", &exact));
        assert!(is("b.example.com", &wild));
        assert!(t.lookup("example.com").is_none());
        assert!(t.lookup("x.b.example.com").is_none());
        assert_eq!(t.hosts(), ["*.example.com", "a.example.com"]);
    }

    #[test]
    fn bad_pem_is_an_error() {
        assert!(matches!(
            certified_key_from_pem(b"nothing", b"nothing"),
            Err(CertError::NoCertificate)
        ));
        let (_, cert, _) = self_signed(&["x.example"]).expect("self-signed");
        assert!(certified_key_from_pem(cert.as_bytes(), b"not a key").is_err());
    }
}
