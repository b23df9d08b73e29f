//! HTTPS on the gateway's listeners (`STANNA_TLS_CERT_FILE` / `STANNA_TLS_KEY_FILE`): rustls,
//! HTTP/1.1 and h2 offered by ALPN, and the certificate **reloaded without dropping a
//! connection** — on SIGHUP, or when either file changes (looked at every
//! [`WATCH_INTERVAL`]). A reload swaps the certificate that new handshakes get; connections
//! already open keep theirs. A new pair that does not load (half-written, key not matching) is
//! logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the files' modification times are looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate pair that could not be used; names the setting and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The gateway's TLS: the acceptor every listener uses and the certificate behind it.
#[derive(Clone)]
pub struct GatewayTls {
    acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Reloading>,
}

impl std::fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTls")
            .field("cert", &self.certificate.cert)
            .finish_non_exhaustive()
    }
}

impl GatewayTls {
    /// Loads the pair and builds the server configuration.
    ///
    /// # Errors
    /// [`TlsError`] for a file that does not read, holds no PEM certificate or key, or a key that
    /// does not match the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_pair(cert, key, &provider)?;
        let certificate = Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(stamps(cert, key)),
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Reads the pair again and, if it loads, gives it to every handshake from now on.
    ///
    /// # Errors
    /// Why the new pair was not taken (the old one stays).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.certificate.reload()
    }

    /// Reloads on SIGHUP and when a file's modification time or size changes, until `stop`.
    pub fn watch(&self, stop: CancellationToken) {
        let certificate = self.certificate.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hung_up = async {
                    match hangup.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hung_up = std::future::pending::<()>();
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    () = hung_up => "SIGHUP",
                    _ = tick.tick() => {
                        if !certificate.changed() {
                            continue;
                        }
                        "the files changed"
                    }
                };
                match certificate.reload() {
                    Ok(()) => tracing::info!(
                        cert = %certificate.cert.display(),
                        "TLS certificate reloaded ({why}); open connections keep theirs"
                    ),
                    Err(err) => tracing::error!(
                        error = %err,
                        "TLS certificate not reloaded ({why}); still serving the previous one"
                    ),
                }
            }
        });
    }
}

/// The certificate new handshakes get, and where it comes from.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and sizes when last looked at.
    seen: Mutex<Stamps>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

type Stamps = [Option<(SystemTime, u64)>; 2];

fn stamps(cert: &Path, key: &Path) -> Stamps {
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [stamp(cert), stamp(key)]
}

impl Reloading {
    /// Whether either file changed since last looked at (and notes the new state).
    fn changed(&self) -> bool {
        let now = stamps(&self.cert, &self.key);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }

    fn reload(&self) -> Result<(), TlsError> {
        // The files as read now are seen: a SIGHUP after a change does not load them twice.
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stamps(&self.cert, &self.key);
        let loaded = load_pair(&self.cert, &self.key, &self.provider)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The certificate chain and its key, checked to match.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            TlsError(format!(
                "STANNA_TLS_CERT_FILE: {} holds no usable PEM certificate: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "STANNA_TLS_CERT_FILE: {} holds no PEM certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!(
            "STANNA_TLS_KEY_FILE: {} holds no usable PEM private key: {e}",
            key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        TlsError(format!(
            "STANNA_TLS_KEY_FILE ({}) does not go with STANNA_TLS_CERT_FILE ({}): {e}",
            key.display(),
            cert.display()
        ))
    })
}
