//! The `STANNA_GRPC_*` TLS settings: TLS and mTLS between the services (loaded by
//! `stanna_grpc::GrpcTls`).

use std::path::PathBuf;

/// TLS of this process's gRPC servers and of its clients of other services.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "grpc_tls_config")]
#[command(next_help_heading = "gRPC TLS")]
pub struct GrpcTlsConfig {
    /// Certificate chain (PEM) the gRPC servers of this process present; with
    /// STANNA_GRPC_TLS_KEY_FILE they speak TLS only.
    #[arg(long, env = "STANNA_GRPC_TLS_CERT_FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of STANNA_GRPC_TLS_CERT_FILE.
    #[arg(long, env = "STANNA_GRPC_TLS_KEY_FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,

    /// CA certificate(s) (PEM): the gRPC servers then require a client certificate signed by
    /// one of them (mTLS between the services).
    #[arg(long, env = "STANNA_GRPC_CLIENT_CA_FILE")]
    pub grpc_client_ca_file: Option<PathBuf>,

    /// CA certificate(s) (PEM) clients trust for `https://` service URLs (default: the system's
    /// roots).
    #[arg(long, env = "STANNA_GRPC_CA_FILE")]
    pub grpc_ca_file: Option<PathBuf>,

    /// Certificate chain (PEM) this process presents when it calls another service over TLS.
    #[arg(long, env = "STANNA_GRPC_CLIENT_CERT_FILE")]
    pub grpc_client_cert_file: Option<PathBuf>,

    /// Private key (PEM) of STANNA_GRPC_CLIENT_CERT_FILE.
    #[arg(long, env = "STANNA_GRPC_CLIENT_KEY_FILE")]
    pub grpc_client_key_file: Option<PathBuf>,
}
