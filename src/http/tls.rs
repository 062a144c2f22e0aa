//! TLS for the admin API: rustls on the ring provider, a certificate that can be
//! replaced while the keeper runs.
//!
//! [`Tls::load`] reads a PEM certificate chain (leaf first) and its private key (PKCS#8,
//! PKCS#1 or SEC1), checks that they belong together, and builds an acceptor offering
//! TLS 1.3 and 1.2 with rustls's safe defaults and ALPN `http/1.1`. [`Tls::reload`] reads
//! the files again and puts the new certificate in force for every handshake from then
//! on (SIGHUP does it, so a renewed certificate needs no restart); a pair that does not
//! load leaves the old one in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind needed.
    #[error("cannot read {what} from {path}: {reason}")]
    File {
        /// `the certificate chain` or `the private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, or of a kind
    /// ring does not sign with).
    #[error("the certificate {cert} and the key {key} cannot be used together: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The admin API's TLS: an acceptor, and the certificate it presents.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.current.cert_file)
            .field("key_file", &self.current.key_file)
            .finish_non_exhaustive()
    }
}

/// The certificate in force, and where it came from.
#[derive(Debug)]
struct Current {
    cert_file: PathBuf,
    key_file: PathBuf,
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.key
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads `cert_file` and `key_file` and builds the acceptor.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Tls, TlsError> {
        let provider = provider();
        let key = certified(cert_file, key_file, &provider)?;
        let current = Arc::new(Current {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            key: RwLock::new(Arc::new(key)),
        });
        let pair = |reason: rustls::Error| TlsError::Pair {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(pair)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    /// Reads the files again; on success every later handshake presents the new
    /// certificate (connections already open keep theirs). On failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified(&self.current.cert_file, &self.current.key_file, &provider())?;
        *self
            .current
            .key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// The acceptor, for the server's accept loop.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate chain of `cert_file` with the key of `key_file`, checked to match.
fn certified(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let file_error = |what, path: &Path, reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| file_error("the certificate chain", cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "the certificate chain",
            cert_file,
            "no CERTIFICATE block".to_owned(),
        ));
    }
    // The key file is a secret: refused if others may read it, as a key file is.
    crate::config::read_private_file(key_file)
        .map_err(|e| file_error("the private key", key_file, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| file_error("the private key", key_file, e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
        cert: cert_file.to_path_buf(),
        key: key_file.to_path_buf(),
        reason: e.to_string(),
    })
}
