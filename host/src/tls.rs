//! TLS for the public webhook listener, with certificates that can be rotated on disk
//! (as cert-manager does) without a restart: the files are checked at most once a
//! second during handshakes and reloaded when they change.

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read TLS key {path}: {reason}")]
    Key { path: String, reason: String },
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Serves the certificate in `cert`/`key` and follows changes to those files.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .finish()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            reason: "no PEM certificate in file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let signing = any_supported_type(&private).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

impl ReloadingCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<ReloadingCert, TlsError> {
        let loaded = load(&cert, &key)?;
        let stamp = (mtime(&cert), mtime(&key));
        Ok(ReloadingCert {
            current: Mutex::new(Loaded {
                key: loaded,
                stamp,
                checked: Instant::now(),
            }),
            cert,
            key,
        })
    }

    /// The rustls server configuration for this certificate (HTTP/1.1 and h2).
    pub fn server_config(self: Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap();
        if current.checked.elapsed() >= Duration::from_secs(1) {
            current.checked = Instant::now();
            let stamp = (mtime(&self.cert), mtime(&self.key));
            if stamp != current.stamp {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded TLS certificate");
                        current.key = key;
                        current.stamp = stamp;
                    }
                    // Mid-rotation the pair may not match yet: keep serving the old one.
                    Err(e) => tracing::warn!("keeping the previous TLS certificate: {e}"),
                }
            }
        }
        Some(current.key.clone())
    }
}
