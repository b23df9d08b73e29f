//! TLS between the services: what a gRPC server presents (and which client certificates it
//! requires, for mTLS) and what a client trusts and presents. Files are PEM, read once at start;
//! a missing or unreadable file refuses to start with the variable and path named.
//!
//! Which settings say what (`STANNA_GRPC_*`, read by `stanna serve`):
//! - `STANNA_GRPC_TLS_CERT_FILE` + `STANNA_GRPC_TLS_KEY_FILE`: the servers speak TLS only;
//! - `STANNA_GRPC_CLIENT_CA_FILE`: and refuse a client without a certificate signed by it;
//! - `STANNA_GRPC_CA_FILE`: what clients trust for `https://` service URLs (else the system's
//!   roots);
//! - `STANNA_GRPC_CLIENT_CERT_FILE` + `_KEY_FILE`: the certificate clients present.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS handshake not done within this is cut (tonic's own default is none on the server).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{variable}: cannot read {path}: {source}")]
    Read {
        /// The setting naming the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM block of the kind needed.
    #[error("{variable}: {path} holds no PEM {kind}")]
    NotPem {
        /// The setting naming the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// What was looked for ("CERTIFICATE", "PRIVATE KEY").
        kind: &'static str,
    },
    /// Only one half of a certificate/key pair is set.
    #[error("{set} is set without {missing}: give both")]
    HalfPair {
        /// The one set.
        set: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// A setting that needs another.
    #[error("{set} needs {needs}")]
    Needs {
        /// The one set.
        set: &'static str,
        /// What it needs.
        needs: &'static str,
    },
}

/// Reads the PEM file `path` named by `variable`, checking it holds a block whose label ends in
/// `kind` (`CERTIFICATE`, `PRIVATE KEY`: `RSA PRIVATE KEY` and `EC PRIVATE KEY` count).
///
/// # Errors
/// [`TlsError::Read`] or [`TlsError::NotPem`].
pub fn read_pem(
    variable: &'static str,
    path: &Path,
    kind: &'static str,
) -> Result<Vec<u8>, TlsError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        variable,
        path: shown(),
        source,
    })?;
    let text = String::from_utf8_lossy(&pem);
    let has_block = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label.ends_with(kind))
    });
    if !has_block {
        return Err(TlsError::NotPem {
            variable,
            path: shown(),
            kind,
        });
    }
    Ok(pem)
}

/// Both halves of a certificate/key pair, or neither.
///
/// # Errors
/// [`TlsError::HalfPair`] naming the one missing.
pub fn pair<'a>(
    cert: (&'static str, Option<&'a Path>),
    key: (&'static str, Option<&'a Path>),
) -> Result<Option<(&'a Path, &'a Path)>, TlsError> {
    match (cert.1, key.1) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::HalfPair {
            set: cert.0,
            missing: key.0,
        }),
        (None, Some(_)) => Err(TlsError::HalfPair {
            set: key.0,
            missing: cert.0,
        }),
    }
}

/// The files of the `STANNA_GRPC_*` settings, as given.
#[derive(Debug, Clone, Default)]
pub struct GrpcTlsFiles<'a> {
    /// `STANNA_GRPC_TLS_CERT_FILE`.
    pub server_cert: Option<&'a Path>,
    /// `STANNA_GRPC_TLS_KEY_FILE`.
    pub server_key: Option<&'a Path>,
    /// `STANNA_GRPC_CLIENT_CA_FILE`.
    pub client_ca: Option<&'a Path>,
    /// `STANNA_GRPC_CA_FILE`.
    pub ca: Option<&'a Path>,
    /// `STANNA_GRPC_CLIENT_CERT_FILE`.
    pub client_cert: Option<&'a Path>,
    /// `STANNA_GRPC_CLIENT_KEY_FILE`.
    pub client_key: Option<&'a Path>,
}

/// TLS for this process's gRPC servers and clients, loaded from [`GrpcTlsFiles`]. The default:
/// plaintext servers, clients of `https://` URLs trusting the system's roots.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// What the servers present and require; `None`: plaintext (h2c).
    pub server: Option<ServerTlsConfig>,
    /// What clients of `https://` URLs trust and present.
    client: ClientTlsConfig,
    /// Whether any client setting was given: then an `http://` service URL is a mistake.
    client_configured: bool,
}

impl Default for GrpcTls {
    fn default() -> Self {
        Self {
            server: None,
            client: ClientTlsConfig::new()
                .with_native_roots()
                .timeout(HANDSHAKE_TIMEOUT),
            client_configured: false,
        }
    }
}

impl GrpcTls {
    /// Reads and checks every file given.
    ///
    /// # Errors
    /// [`TlsError`] naming the setting at fault.
    pub fn load(files: &GrpcTlsFiles<'_>) -> Result<Self, TlsError> {
        let server = match pair(
            ("STANNA_GRPC_TLS_CERT_FILE", files.server_cert),
            ("STANNA_GRPC_TLS_KEY_FILE", files.server_key),
        )? {
            Some((cert, key)) => {
                let identity = Identity::from_pem(
                    read_pem("STANNA_GRPC_TLS_CERT_FILE", cert, "CERTIFICATE")?,
                    read_pem("STANNA_GRPC_TLS_KEY_FILE", key, "PRIVATE KEY")?,
                );
                let mut config = ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(HANDSHAKE_TIMEOUT);
                if let Some(ca) = files.client_ca {
                    // tonic requires the certificate when a client CA is set (auth not optional).
                    config = config.client_ca_root(Certificate::from_pem(read_pem(
                        "STANNA_GRPC_CLIENT_CA_FILE",
                        ca,
                        "CERTIFICATE",
                    )?));
                }
                Some(config)
            }
            None if files.client_ca.is_some() => {
                return Err(TlsError::Needs {
                    set: "STANNA_GRPC_CLIENT_CA_FILE",
                    needs: "STANNA_GRPC_TLS_CERT_FILE and STANNA_GRPC_TLS_KEY_FILE (client certificates are asked for in the TLS handshake)",
                });
            }
            None => None,
        };
        let mut client = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        client = match files.ca {
            Some(ca) => client.ca_certificate(Certificate::from_pem(read_pem(
                "STANNA_GRPC_CA_FILE",
                ca,
                "CERTIFICATE",
            )?)),
            None => client.with_native_roots(),
        };
        let identity = pair(
            ("STANNA_GRPC_CLIENT_CERT_FILE", files.client_cert),
            ("STANNA_GRPC_CLIENT_KEY_FILE", files.client_key),
        )?;
        if let Some((cert, key)) = identity {
            client = client.identity(Identity::from_pem(
                read_pem("STANNA_GRPC_CLIENT_CERT_FILE", cert, "CERTIFICATE")?,
                read_pem("STANNA_GRPC_CLIENT_KEY_FILE", key, "PRIVATE KEY")?,
            ));
        }
        Ok(Self {
            server,
            client,
            client_configured: files.ca.is_some() || identity.is_some(),
        })
    }

    /// What clients of `https://` URLs use.
    pub fn client(&self) -> &ClientTlsConfig {
        &self.client
    }

    /// Whether a client setting (`STANNA_GRPC_CA_FILE`, a client certificate) was given.
    pub fn client_configured(&self) -> bool {
        self.client_configured
    }
}
