//! `stanna`: every Stanna Keys service in one binary.
//!
//! `stanna serve` runs the whole system in one process on the embedded defaults (SQLite file,
//! nothing to install); `stanna serve registry` runs one service alone (split mode);
//! `stanna healthcheck ADDR` probes a service's gRPC health (for container health checks). The
//! wiring is the `stanna` library's (`lib.rs`).

mod cli;
mod healthcheck;
mod keys_cli;

use stanna::{Listeners, Overrides, System};

/// mimalloc instead of glibc malloc: measured in docs/gateway.md ("Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole cause chain on one line, never a backtrace (RUST_BACKTRACE is for
            // panics): what an operator reads is what went wrong and which setting to change.
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for a setting refused at start (as clap does for a value it refuses), 1 for anything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let refused = matches!(
        err.downcast_ref::<stanna::BuildError>(),
        Some(stanna::BuildError::Setting(_))
    ) || matches!(
        err.downcast_ref::<stanna_telemetry::TelemetryError>(),
        Some(stanna_telemetry::TelemetryError::Setting(_))
    ) || matches!(
        err.downcast_ref::<keys_cli::KeysError>(),
        Some(keys_cli::KeysError::Usage(_))
    );
    if refused { 2 } else { 1 }
}

fn run() -> anyhow::Result<()> {
    let cli = cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        cli::Command::Serve(settings) => {
            // Inside the runtime: the OTLP exporter's channel lives on it.
            let telemetry = runtime.block_on(async {
                stanna_telemetry::init(settings.service_name(), settings.log_format)
            })?;
            let served = runtime.block_on(serve(*settings));
            telemetry.shutdown();
            served
        }
        cli::Command::SessionLink(args) => {
            println!("{}", session_link(&args)?);
            Ok(())
        }
        cli::Command::Keys(keys) => Ok(runtime.block_on(keys_cli::run(*keys))?),
        cli::Command::Seed(args) => runtime.block_on(seed(&args)),
        cli::Command::Healthcheck { addr, ready, tls } => {
            runtime.block_on(healthcheck::check(&addr, ready, &tls))
        }
    }
}

/// `stanna seed`: progress on standard error, secrets (when asked) on standard output.
async fn seed(args: &stanna::seed::SeedArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let store = stanna_store::KeyStore::connect(&args.database_url).await?;
    let plan = stanna::seed::SeedPlan::of(args);
    let started = std::time::Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    let seeded = stanna::seed::seed(&store, plan, std::time::SystemTime::now(), |secret| {
        if args.print_secrets
            && failed.is_none()
            && let Err(err) = writeln!(out, "{secret}")
        {
            failed = Some(err);
        }
    })
    .await?;
    if let Some(err) = failed {
        return Err(anyhow::anyhow!(
            "writing the secrets to standard output: {err}"
        ));
    }
    out.flush()?;
    eprintln!(
        "seeded {} keys ({} live, {} deleted) in {:.1} s",
        seeded.live + seeded.deleted,
        seeded.live,
        seeded.deleted,
        started.elapsed().as_secs_f64()
    );
    store.close().await?;
    Ok(())
}

async fn serve(mut settings: stanna::Settings) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM during start-up still shuts down cleanly.
    let signals = stanna::shutdown::Signals::new()?;
    settings.check().map_err(stanna::BuildError::Setting)?;
    settings
        .registry
        .read_token_files()
        .map_err(stanna::BuildError::Setting)?;
    // The all-in-one process with nothing configured keeps what it generates in the state
    // directory (owner-only files, reused across restarts); a service run alone must be told.
    let all_in_one = settings.service.is_none();
    let admin = if all_in_one && settings.registry.admin_token.is_none() {
        let kept = stanna::state::keep(
            &settings.session.state_dir,
            stanna::state::ADMIN_TOKEN_FILE,
            32,
            stanna_key_registry::AdminToken::MIN_LEN,
        )
        .map_err(|e| stanna::BuildError::Setting(e.to_string()))?;
        settings.registry.admin_token = Some(kept.value.parse().map_err(|e: String| {
            stanna::BuildError::Setting(format!("{}: {e}", kept.path.display()))
        })?);
        Some(kept)
    } else {
        None
    };
    let session_secret = if all_in_one && !settings.session.is_configured() {
        let kept = stanna::state::keep(
            &settings.session.state_dir,
            stanna::state::SESSION_SECRET_FILE,
            48,
            stanna_keys::login::MIN_SECRET_LEN,
        )
        .map_err(|e| stanna::BuildError::Setting(e.to_string()))?;
        settings.session.session_secret_file = Some(kept.path.clone());
        Some(kept)
    } else {
        None
    };
    // The dashboard is where the links go: its own listener when it has one.
    let dashboard_port = settings
        .gateway
        .dashboard_addr
        .map_or(settings.gateway.addr.port(), |a| a.port());
    follow_gateway_port(&mut settings.session, dashboard_port)?;
    let system = System::build(settings.clone(), Overrides::default()).await?;
    let listeners = Listeners::bind(&settings).await?;
    // Shown only now: a run refused at start (a setting, Redis, the store, a busy port) shows
    // no token nobody could use.
    if let Some(admin) = &admin {
        stanna::admin_token::print(admin, settings.log_format);
    }
    if let Some(kept) = &session_secret {
        print_sign_in(&settings, kept);
    }
    let (shutdown, hurry) = signals.first_and_second();
    system.serve_until(listeners, shutdown, hurry).await?;
    Ok(())
}

/// Sign-in links point at the gateway's own port unless a public URL is given (so a gateway moved
/// off 8080 still gets links that reach it).
fn follow_gateway_port(
    session: &mut stanna_config::SessionConfig,
    port: u16,
) -> Result<(), stanna::BuildError> {
    if std::env::var_os("STANNA_PUBLIC_URL").is_none()
        && !std::env::args().any(|a| a.starts_with("--public-url"))
        && port != 8080
    {
        session.public_url = stanna_config::public_url(&format!("http://localhost:{port}"))
            .map_err(stanna::BuildError::Setting)?;
    }
    Ok(())
}

/// `stanna session-link`: a sign-in link for a user, signed with the session secret (the one
/// configured, or the one `stanna serve` keeps in the state directory).
fn session_link(args: &cli::SessionLink) -> anyhow::Result<String> {
    let mut session = args.session.clone();
    // Like `stanna serve`: without STANNA_PUBLIC_URL, the link follows STANNA_DASHBOARD_ADDR or
    // STANNA_GATEWAY_ADDR.
    if let Some(port) = std::env::var("STANNA_DASHBOARD_ADDR")
        .or_else(|_| std::env::var("STANNA_GATEWAY_ADDR"))
        .ok()
        .and_then(|addr| stanna_config::listen_addr(&addr).ok())
        .map(|addr| addr.port())
    {
        follow_gateway_port(&mut session, port)?;
    }
    if session.session_jwks_file.is_some() {
        anyhow::bail!(
            "STANNA_SESSION_JWKS_FILE is set: login tokens are signed by the product's private keys, which stanna does not hold; mint one as README \"Dashboard\" shows"
        );
    }
    if !session.is_configured() {
        let path = session.state_dir.join(stanna::state::SESSION_SECRET_FILE);
        if !path.exists() {
            anyhow::bail!(
                "no session secret: set STANNA_SESSION_SECRET (or _FILE), or start `stanna serve` once in {} so it makes one",
                session.state_dir.display()
            );
        }
        session.session_secret_file = Some(path);
    }
    let secret = match (&session.session_secret, &session.session_secret_file) {
        (Some(secret), _) => secret.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => unreachable!("configured or read from the state directory above"),
    };
    let mut claims = stanna_keys::login::claims_now(
        &args.workspace,
        &args.user,
        &session.session_audience,
        std::time::SystemTime::now(),
    );
    claims.iss.clone_from(&session.session_issuer);
    claims.name.clone_from(&args.name);
    claims.email.clone_from(&args.email);
    claims.role = Some(args.role.clone());
    // Checked as the server will check it, so a bad workspace or user id is said here.
    let verifier = stanna_keys::login::LoginVerifier::with_secret(
        secret.as_bytes(),
        &session.session_audience,
        session.session_issuer.as_deref(),
        stanna_keys::system_clock(),
    )
    .map_err(|e| anyhow::anyhow!("the session secret {e}"))?;
    let token = stanna_keys::login::mint_hs256(secret.as_bytes(), &claims)
        .map_err(|e| anyhow::anyhow!("the session secret {e}"))?;
    verifier
        .verify(&token)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "{}/settings/api-keys/session?token={token}",
        session.public_url.origin
    ))
}

/// The dashboard's way in for a newcomer: a sign-in link for a demo user when stdout is a
/// terminal (a person is there to click it within its five minutes), else the command that makes
/// one (a link in a container log would be stale, and a credential in a log).
fn print_sign_in(settings: &stanna::Settings, secret: &stanna::state::Kept) {
    use std::io::IsTerminal as _;
    let how = if secret.generated {
        "generated"
    } else {
        "kept"
    };
    if std::io::stdout().is_terminal() {
        let args = cli::SessionLink {
            workspace: "ws_demo".to_owned(),
            user: "alice".to_owned(),
            name: Some("Alice".to_owned()),
            email: None,
            role: "member".to_owned(),
            session: settings.session.clone(),
        };
        match session_link(&args) {
            Ok(link) => {
                println!(
                    "Dashboard (Settings → API Keys) — sign in as alice in ws_demo (valid 5 minutes, once):"
                );
                println!("  {link}");
                println!(
                    "  (another link: stanna session-link --workspace W --user U; the session secret is {how} in {})",
                    secret.path.display()
                );
            }
            Err(err) => tracing::warn!(error = %err, "no sign-in link could be made"),
        }
    } else {
        // The command as this binary was started (`target/debug/stanna`, `stanna`).
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "stanna".to_owned());
        tracing::info!(
            secret = %secret.path.display(),
            "dashboard sign-in: run `{program} session-link --workspace ws_demo --user alice --name Alice` in this directory for a link (the session secret is {how} in the state directory)"
        );
    }
}
