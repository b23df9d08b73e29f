//! `stanna serve`: the all-in-one process or one service alone.

use rand::RngExt;
use stanna_key_registry::AdminToken;
use tokio::net::TcpListener;

use crate::cli::{ServeArgs, ServiceName};

/// Runs what `args` asks for until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut registry = args.registry;
    match args.service {
        Some(ServiceName::Registry) => {
            anyhow::ensure!(
                registry.admin_token.is_some(),
                "STANNA_ADMIN_TOKEN is required when a service runs alone: set it to a random string of at least {} characters",
                AdminToken::MIN_LEN
            );
        }
        None => {
            if registry.admin_token.is_none() {
                registry.admin_token = Some(generated_admin_token()?);
            }
        }
    }
    // Signal handlers first, so a SIGTERM during start-up still shuts down cleanly.
    let shutdown = shutdown_signal()?;
    let listener = TcpListener::bind(registry.addr).await?;
    let token = registry
        .admin_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no admin token"))?;
    let core = stanna_key_registry::build(&registry, &args.shared).await?;
    tracing::info!(database = %redact_url(&args.shared.database_url), "key-registry listening on {}", listener.local_addr()?);
    stanna_key_registry::serve(core, token, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
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

/// Registers Ctrl-C and SIGTERM handlers now and returns a future that completes on either,
/// after which servers finish in-flight calls and stop.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
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
