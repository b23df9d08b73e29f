//! `stanna serve`: the all-in-one process or one service alone.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use rand::RngExt;
use stanna_auth_check::{AuthCheckService, Verifier};
use stanna_key_registry::AdminToken;
use stanna_quota_service::QuotaService;
use stanna_store::KeyStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{ServeArgs, ServiceName};

/// Runs what `args` asks for until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM during start-up still shuts down cleanly.
    let shutdown = shutdown_signal()?;
    let metrics = bind("metrics", args.metrics_addr()).await?;
    tokio::spawn(async move {
        if let Err(err) = stanna_telemetry::metrics::serve(metrics, std::future::pending()).await {
            tracing::error!(error = %err, "the metrics listener failed");
        }
    });
    match args.service {
        Some(ServiceName::Registry) => serve_registry_alone(args, shutdown).await,
        Some(ServiceName::AuthCheck) => {
            let listener = bind("auth-check", args.auth_check.addr).await?;
            stanna_auth_check::run(
                args.auth_check,
                &args.shared,
                &args.quota,
                listener,
                shutdown,
            )
            .await?;
            Ok(())
        }
        Some(ServiceName::Quota) => {
            let listener = bind("quota", args.quota.addr).await?;
            tracing::info!(
                backend = if args.quota.redis_url.is_some() {
                    "redis"
                } else {
                    "in-process"
                },
                "quota backend"
            );
            stanna_quota_service::run(args.quota, listener, shutdown).await?;
            Ok(())
        }
        Some(ServiceName::Gateway) => {
            let token = required_admin_token(&args)?;
            let listener = bind("gateway", args.gateway.addr).await?;
            stanna_gateway::run(args.gateway, token.expose(), listener, shutdown).await?;
            Ok(())
        }
        None => serve_all_in_one(args, shutdown).await,
    }
}

/// The admin token a service run alone needs (the registry checks it, the gateway sends it).
fn required_admin_token(args: &ServeArgs) -> anyhow::Result<AdminToken> {
    args.registry.admin_token.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "STANNA_ADMIN_TOKEN is required when a service runs alone: set it to a random string of at least {} characters",
            AdminToken::MIN_LEN
        )
    })
}

async fn serve_registry_alone(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let token = required_admin_token(&args)?;
    let listener = TcpListener::bind(args.registry.addr).await?;
    let store = KeyStore::connect(&args.shared.database_url).await?;
    let core = stanna_key_registry::build_with_store(&args.registry, &args.shared, store.clone())?;
    tracing::info!(database = %redact_url(&args.shared.database_url), "key-registry listening on {}", listener.local_addr()?);
    let served = stanna_key_registry::serve(core, token, listener, shutdown).await;
    if let Err(err) = store.close().await {
        tracing::warn!(error = %err, "closing the database failed");
    }
    served?;
    Ok(())
}

/// Every service in this process: one store, quota wired to auth-check in memory, each gRPC
/// service still on its own port (grpcurl works against each).
async fn serve_all_in_one(
    mut args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let token = match args.registry.admin_token.take() {
        Some(token) => token,
        None => generated_admin_token()?,
    };
    let store = KeyStore::connect(&args.shared.database_url).await?;
    let pool = store.clone();
    let registry =
        stanna_key_registry::build_with_store(&args.registry, &args.shared, store.clone())?;
    let quota = QuotaService::new(args.quota.backend()?);
    let quota_transport =
        stanna_auth_check::quota_transport(&args.auth_check, || Ok(quota.clone()))?;
    let verifier = Verifier::new(
        store,
        quota_transport,
        args.auth_check.verifier_settings(&args.shared),
        Arc::new(SystemTime::now),
    );
    let background = stanna_auth_check::start(&verifier, &args.auth_check);
    let gateway = all_in_one_gateway(&args, &verifier, &registry, &token)?;

    let gateway_listener = bind("gateway", args.gateway.addr).await?;
    let quota_listener = bind("quota", args.quota.addr).await?;
    let auth_listener = bind("auth-check", args.auth_check.addr).await?;
    let registry_listener = TcpListener::bind(args.registry.addr).await?;
    tracing::info!(
        database = %redact_url(&args.shared.database_url),
        quota = if args.quota.redis_url.is_some() { "redis" } else { "in-process" },
        "key-registry listening on {}",
        registry_listener.local_addr()?
    );

    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let result = tokio::select! {
        r = async {
            tokio::try_join!(
                async { stanna_key_registry::serve(registry, token, registry_listener, until_stopped()).await.map_err(anyhow::Error::from) },
                async { stanna_auth_check::serve(verifier.clone(), auth_listener, until_stopped()).await.map_err(anyhow::Error::from) },
                async { stanna_quota_service::serve(quota, quota_listener, until_stopped()).await.map_err(anyhow::Error::from) },
                async { stanna_gateway::serve(gateway, gateway_listener, until_stopped()).await.map_err(anyhow::Error::from) },
            )
        } => r.map(|_| ()),
        () = async {
            shutdown.await;
            let _ = stop.send(true);
            std::future::pending::<()>().await;
        } => Ok(()),
    };
    drop(background);
    if let Err(err) = verifier.flush_last_used().await {
        tracing::warn!(error = %err, "final last-used flush failed");
    }
    // Last: SQLite folds its write-ahead log back into the database file and removes it.
    if let Err(err) = pool.close().await {
        tracing::warn!(error = %err, "closing the database failed");
    }
    result
}

/// The gateway of the all-in-one process: auth-check and the registry in memory unless
/// `STANNA_AUTH_CHECK_URL` / `STANNA_REGISTRY_URL` point elsewhere.
fn all_in_one_gateway(
    args: &ServeArgs,
    verifier: &Verifier,
    registry: &stanna_key_registry::Registry,
    token: &AdminToken,
) -> anyhow::Result<stanna_gateway::Gateway> {
    let auth_check: stanna_gateway::AuthCheckConnection = match &args.gateway.auth_check_url {
        Some(url) => stanna_grpc::lazy_channel(url)?.into(),
        None => {
            stanna_grpc::Connection::InProcess(Arc::new(AuthCheckService::new(verifier.clone())))
        }
    };
    let registry = match &args.gateway.registry_url {
        Some(url) => stanna_grpc::lazy_channel(url)?,
        None => stanna_grpc::in_memory(stanna_key_registry::grpc::authenticated_service(
            registry.clone(),
            token.clone(),
        )),
    };
    Ok(stanna_gateway::Gateway::new(
        &args.gateway,
        auth_check,
        registry,
        token.expose(),
    )?)
}

async fn bind(service: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{service} cannot listen on {addr}: {e}"))?;
    tracing::info!("{service} listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// A fresh admin token for this run, printed once with how to keep it.
fn generated_admin_token() -> anyhow::Result<AdminToken> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let token: String = (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    println!("STANNA_ADMIN_TOKEN is not set, so this run generated one (shown once):");
    println!("  export STANNA_ADMIN_TOKEN={token}");
    println!("Set it before starting stanna to keep the same token across restarts.");
    token.parse().map_err(anyhow::Error::msg)
}

/// A database URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Registers SIGTERM and SIGINT handlers now and returns a future that completes on either,
/// after which servers finish in-flight calls and stop.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_kept_out_of_logged_urls() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://stanna.db?mode=rwc"),
            "sqlite://stanna.db?mode=rwc"
        );
    }
}
