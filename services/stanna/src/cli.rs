//! The command line: `stanna serve [SERVICE]` and `stanna healthcheck ADDR`, and how a refused
//! setting is explained: naming the `STANNA_*` variable that was set (or the flag), with the
//! allowed range or form, and never the value of a secret.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use stanna::Settings;

/// Stanna Keys: API keys for a workspace product — create, verify, rate-limit.
#[derive(Debug, Parser)]
#[command(name = "stanna", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process (default), or one service alone.
    Serve(Box<Settings>),
    /// Print a dashboard sign-in link for a user (signed with the session secret: the one set, or
    /// the one `stanna serve` keeps in STANNA_STATE_DIR). For trying the dashboard locally; a
    /// product mints its own login tokens (README "Dashboard").
    SessionLink(Box<SessionLink>),
    /// Fill a test database with filler keys for load tests (cheap argon2 hashes, no audit
    /// events; never for a real database): `--keys` in all, `--workspace-keys` of them in
    /// `ws_seed_big`, `--deleted-percent` stored deleted.
    Seed(Box<stanna::seed::SeedArgs>),
    /// Manage keys as an admin, over the KeyRegistry's gRPC API: create, list, get, update,
    /// rotate, delete, and revoke dashboard sessions. Human tables, or `--json`.
    Keys(Box<crate::keys_cli::Keys>),
    /// Check a service: gRPC health at host:port, or GET http://host:port/healthz (`--ready`:
    /// /readyz) of the gateway; exit 0 when it answers SERVING / 200 within 3 s, 1 otherwise.
    Healthcheck {
        /// host:port of a Stanna gRPC service, or an http:// or https:// URL of the gateway.
        addr: String,
        /// Ask whether the service can do its work (the gateway's /readyz), not only whether it
        /// runs.
        #[arg(long)]
        ready: bool,
        /// The gRPC TLS settings of the service (the same `STANNA_GRPC_*` variables): with
        /// STANNA_GRPC_TLS_CERT_FILE or STANNA_GRPC_CA_FILE set, a gRPC check speaks TLS,
        /// trusting STANNA_GRPC_CA_FILE and presenting STANNA_GRPC_CLIENT_CERT_FILE.
        #[command(flatten)]
        tls: stanna_config::GrpcTlsConfig,
    },
}

/// The arguments of `stanna session-link`.
#[derive(Debug, clap::Args)]
pub struct SessionLink {
    /// The workspace to sign in to.
    #[arg(long, default_value = "ws_demo")]
    pub workspace: String,
    /// The user id (the product's subject, e.g. `auth0|123`).
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// The name the page shows.
    #[arg(long)]
    pub name: Option<String>,
    /// The email the page shows.
    #[arg(long)]
    pub email: Option<String>,
    /// `member` (their own keys) or `admin` (every key of the workspace).
    #[arg(long, default_value = "member", value_parser = ["member", "admin"])]
    pub role: String,
    /// The sign-in settings (secret, audience, issuer, public URL, state directory).
    #[command(flatten)]
    pub session: stanna_config::SessionConfig,
}

/// Parses the process's arguments and variables; exits with status 2 and a sentence for what is
/// refused.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match explain(&err, std::env::args().collect()) {
            Some(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            None => err.exit(),
        },
    }
}

/// A refused value, said in terms of what the operator set. `None` for other clap errors (usage,
/// `--help`), which clap prints itself.
fn explain(err: &clap::Error, args: Vec<String>) -> Option<String> {
    if err.kind() == ErrorKind::MissingRequiredArgument {
        return missing(err);
    }
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?.to_owned();
    let command = Cli::command();
    let found = command
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))?;
    let env = found.get_env().and_then(|e| e.to_str()).map(str::to_owned);
    let secret = found.is_hide_env_values_set();
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let reason = match (
        std::error::Error::source(err),
        err.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("must be one of {}", valid.join(", "))
        }
        _ => "is not a valid value".to_owned(),
    };
    let on_command_line = args
        .iter()
        .any(|a| *a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let setting = match &env {
        Some(name) if !on_command_line => format!("{name} (--{long})"),
        Some(name) => format!("--{long} (or {name})"),
        None => format!("--{long}"),
    };
    Some(match value {
        Some(value) if !secret => format!("{setting}={value} is refused: {reason}"),
        _ => format!("{setting} is refused (its value is not shown): {reason}"),
    })
}

/// A required setting left unset, named by its variable too (clap names only the flag): `None`
/// when none of the missing ones has a variable, for clap to print.
fn missing(err: &clap::Error) -> Option<String> {
    let Some(ContextValue::Strings(missing)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let command = Cli::command();
    let mut any_variable = false;
    let named: Vec<String> = missing
        .iter()
        .map(|arg| {
            let long = arg
                .strip_prefix("--")
                .and_then(|a| a.split([' ', '=']).next());
            let env = long.and_then(|long| {
                command
                    .get_subcommands()
                    .flat_map(|c| c.get_arguments())
                    .find(|a| a.get_long() == Some(long))?
                    .get_env()?
                    .to_str()
            });
            match (env, long) {
                (Some(env), Some(long)) => {
                    any_variable = true;
                    format!("{env} (or --{long})")
                }
                _ => arg.clone(),
            }
        })
        .collect();
    any_variable.then(|| format!("{} must be set", named.join(" and ")))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_variable_is_unique() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn every_setting_has_a_flag_and_a_variable() {
        let command = super::Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "service" || id == "help" || id == "bench_no_auth" {
                continue;
            }
            assert!(arg.get_long().is_some(), "{id} has no flag");
            let env = arg.get_env().and_then(|e| e.to_str());
            assert!(
                env.is_some_and(|e| e.starts_with("STANNA_")),
                "{id} has no STANNA_* variable"
            );
        }
    }

    #[test]
    fn a_refused_value_names_the_flag_and_never_repeats_a_secret() {
        let refused = |args: &[&str]| {
            let args: Vec<String> = std::iter::once("stanna")
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect();
            let err = <super::Cli as clap::Parser>::try_parse_from(&args).unwrap_err();
            super::explain(&err, args).expect("explained")
        };
        let poll = refused(&["serve", "--change-poll-interval", "0s"]);
        assert!(
            poll.starts_with("--change-poll-interval (or STANNA_CHANGE_POLL_INTERVAL)=0s")
                && poll.contains("from 10ms to 30s"),
            "{poll}"
        );
        let token = refused(&["serve", "--admin-token", "short-secret"]);
        assert!(!token.contains("short-secret"), "{token}");
        assert!(token.contains("at least 16 characters"), "{token}");
        let format = refused(&["serve", "--log-format", "yaml"]);
        assert!(format.contains("text, json"), "{format}");
        // A required setting left unset is named by its variable (unless this shell set it).
        if std::env::var_os("STANNA_DATABASE_URL").is_none() {
            let unset = refused(&["seed", "--keys", "10"]);
            assert_eq!(unset, "STANNA_DATABASE_URL (or --database-url) must be set");
        }
    }
}
