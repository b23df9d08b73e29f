//! `stanna keys …`: the admin CLI over the KeyRegistry's gRPC API — what an admin would otherwise
//! type as grpcurl JSON. Human tables by default, `--json` for scripts (the proto3 JSON names);
//! exit 0 when done, 1 when the registry refused or could not be reached, 2 for bad usage
//! (clap's own exit code, and a value refused before any call).
//!
//! The admin token comes from `STANNA_ADMIN_TOKEN`, `STANNA_ADMIN_TOKEN_FILE`, or else the file a
//! local `stanna serve` keeps in its state directory; it is sent only as the `authorization`
//! metadata and never printed. A secret (`create`, `rotate`) is printed once, and said to be.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};
use stanna_proto::keys::v1 as pb;
use stanna_proto::keys::v1::key_registry_client::KeyRegistryClient;
use stanna_proto::prost_types;

/// How long one call may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// `stanna keys`: manage keys through the registry.
#[derive(Debug, clap::Args)]
pub struct Keys {
    /// The KeyRegistry's URL (`https://` when its servers speak TLS).
    #[arg(
        long,
        env = "STANNA_REGISTRY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub registry: String,
    /// The admin token (hidden from help and errors).
    #[arg(long, env = "STANNA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (the container-secret convention).
    #[arg(long, env = "STANNA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Where a local `stanna serve` keeps its generated token (`stanna-admin-token`), read when
    /// neither of the above is set.
    #[arg(long, env = "STANNA_STATE_DIR", default_value = ".")]
    pub state_dir: PathBuf,
    /// Print JSON (the API's proto3 JSON) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The gRPC TLS settings of the services (the same `STANNA_GRPC_*` variables).
    #[command(flatten)]
    pub tls: stanna_config::GrpcTlsConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The key commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed this once.
    Create {
        /// The workspace.
        #[arg(long, short)]
        workspace: String,
        /// The owner (the product's user id).
        #[arg(long, short)]
        user: String,
        /// The key's name.
        #[arg(long, short)]
        name: String,
        /// When it stops verifying (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        expires_at: Option<prost_types::Timestamp>,
        /// A burst-window override, LIMIT/PERIOD (e.g. 20/60s).
        #[arg(long, value_parser = parse_window)]
        burst: Option<(u32, Duration)>,
        /// An hourly-window override, LIMIT/PERIOD (e.g. 500/1h).
        #[arg(long, value_parser = parse_window)]
        hourly: Option<(u32, Duration)>,
        /// Metadata: a JSON object of at most 1024 bytes.
        #[arg(long)]
        metadata: Option<String>,
        /// A scope the key is limited to (repeat for more); none: the user's full permissions.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List keys, newest first.
    List {
        /// The workspace.
        #[arg(long, short)]
        workspace: String,
        /// Only this user's keys.
        #[arg(long, short)]
        user: Option<String>,
        /// Keys per page (at most 100).
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// Continue from a previous page's token.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow every page.
        #[arg(long, conflicts_with = "page_token")]
        all: bool,
        /// Only keys whose name contains this text (ignoring case).
        #[arg(long)]
        name: Option<String>,
        /// Only keys with this status.
        #[arg(long, value_parser = ["active", "inactive"])]
        status: Option<String>,
        /// Only keys not used for at least this many days (never-used keys count from creation).
        #[arg(long, value_name = "DAYS")]
        unused_for_days: Option<u32>,
    },
    /// Show one key.
    Get {
        /// The key id (12 characters).
        key_id: String,
        /// The key's workspace.
        #[arg(long, short)]
        workspace: String,
    },
    /// Change a key live: only what is given changes; the `--no-…` and `--default-…` flags clear.
    Update {
        /// The key id.
        key_id: String,
        /// The key's workspace.
        #[arg(long, short)]
        workspace: String,
        /// A new name.
        #[arg(long, short)]
        name: Option<String>,
        /// `active` or `inactive`.
        #[arg(long, value_parser = ["active", "inactive"])]
        status: Option<String>,
        /// A new expiry (RFC 3339; a time already past stops the key at once).
        #[arg(long, value_parser = parse_time, conflicts_with = "no_expiry")]
        expires_at: Option<prost_types::Timestamp>,
        /// Remove the expiry (never for an expired or rotated-out key).
        #[arg(long)]
        no_expiry: bool,
        /// A burst-window override, LIMIT/PERIOD.
        #[arg(long, value_parser = parse_window, conflicts_with = "default_burst")]
        burst: Option<(u32, Duration)>,
        /// Return the burst window to the configured default.
        #[arg(long)]
        default_burst: bool,
        /// An hourly-window override, LIMIT/PERIOD.
        #[arg(long, value_parser = parse_window, conflicts_with = "default_hourly")]
        hourly: Option<(u32, Duration)>,
        /// Return the hourly window to the configured default.
        #[arg(long)]
        default_hourly: bool,
        /// New metadata (a JSON object).
        #[arg(long, conflicts_with = "no_metadata")]
        metadata: Option<String>,
        /// Remove the metadata.
        #[arg(long)]
        no_metadata: bool,
        /// Limit the key to these scopes, replacing its own (repeat for more).
        #[arg(long = "scope", value_name = "SCOPE", conflicts_with = "unscoped")]
        scopes: Vec<String>,
        /// Remove the key's scopes: it gets its user's full permissions.
        #[arg(long)]
        unscoped: bool,
    },
    /// Replace a key by a new one (printed once); the old one works for the grace period.
    Rotate {
        /// The key id.
        key_id: String,
        /// The key's workspace.
        #[arg(long, short)]
        workspace: String,
        /// How long the old key keeps working (e.g. 1h, 30m, 3600s; at most 30 days).
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        grace: Duration,
    },
    /// Delete a key for good.
    Delete {
        /// The key id.
        key_id: String,
        /// The key's workspace.
        #[arg(long, short)]
        workspace: String,
    },
    /// Requests per key by outcome (allowed, rate-limited, inactive, expired, forbidden) over the
    /// last days: totals, or every hour with --hourly. Written every few seconds by auth-check.
    Usage {
        /// 1 to 100 key ids.
        #[arg(required = true, num_args = 1..=100)]
        key_ids: Vec<String>,
        /// The keys' workspace.
        #[arg(long, short)]
        workspace: String,
        /// How many days up to now (1 to 30).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=30))]
        days: u32,
        /// One line per key and hour instead of totals.
        #[arg(long)]
        hourly: bool,
    },
    /// The audit log: who changed which key or session, when, in which request, and what
    /// changed (newest first; every page with --all).
    Audit {
        /// The workspace.
        #[arg(long, short)]
        workspace: String,
        /// Only this key's events (and the rotation that made it).
        #[arg(long)]
        key: Option<String>,
        /// Only events of this user's keys and sessions.
        #[arg(long)]
        user: Option<String>,
        /// Only the last this many days (1 to 3650).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: Option<u32>,
        /// Events per page (1 to 100).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Every page, not only the newest.
        #[arg(long)]
        all: bool,
    },
    /// Dashboard sessions.
    Sessions {
        /// What to do with them.
        #[command(subcommand)]
        command: SessionsCommand,
    },
}

/// The session commands.
#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// End every session of a workspace, or of one user in it.
    Revoke {
        /// The workspace.
        #[arg(long, short)]
        workspace: String,
        /// Only this user's sessions.
        #[arg(long, short)]
        user: Option<String>,
    },
}

/// Why a `stanna keys` command failed: `main` exits 2 for [`KeysError::Usage`], 1 otherwise.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Bad usage found before any call (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The registry refused, or could not be reached (exit 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Runs `stanna keys …`, printing its answer to stdout.
///
/// # Errors
/// [`KeysError`]: what was refused, in words.
pub async fn run(keys: Keys) -> Result<(), KeysError> {
    // Bad usage is said before any token is read or call made.
    if let KeysCommand::Update {
        name: None,
        status: None,
        expires_at: None,
        no_expiry: false,
        burst: None,
        default_burst: false,
        hourly: None,
        default_hourly: false,
        metadata: None,
        no_metadata: false,
        scopes,
        unscoped: false,
        ..
    } = &keys.command
        && scopes.is_empty()
    {
        return Err(KeysError::Usage(
            "nothing to change: give --name, --status, --expires-at/--no-expiry, --burst/--default-burst, --hourly/--default-hourly, --metadata/--no-metadata or --scope/--unscoped".into(),
        ));
    }
    let token = admin_token(&keys)?;
    let mut client = connect(&keys).await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| KeysError::Usage("the admin token holds characters a header cannot".into()))?;
    let json_out = keys.json;
    match keys.command {
        KeysCommand::Create {
            workspace,
            user,
            name,
            expires_at,
            burst,
            hourly,
            metadata,
            scopes,
        } => {
            let created = client
                .create_key(authorized(
                    &bearer,
                    pb::CreateKeyRequest {
                        workspace_id: workspace,
                        user_id: user,
                        name,
                        expires_at,
                        rate_limits: windows(burst, hourly),
                        metadata: metadata.unwrap_or_default(),
                        scopes,
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner();
            print_created(created.key.as_ref(), &created.secret, json_out);
        }
        KeysCommand::List {
            workspace,
            user,
            page_size,
            page_token,
            all,
            name,
            status,
            unused_for_days,
        } => {
            let mut keys = Vec::new();
            let mut token = page_token.unwrap_or_default();
            loop {
                let page = client
                    .list_keys(authorized(
                        &bearer,
                        pb::ListKeysRequest {
                            workspace_id: workspace.clone(),
                            user_id: user.clone().unwrap_or_default(),
                            page_size,
                            page_token: token,
                            name_contains: name.clone().unwrap_or_default(),
                            status: status_arg(status.as_deref()) as i32,
                            unused_for_days: unused_for_days.unwrap_or(0),
                        },
                    ))
                    .await
                    .map_err(refused)?
                    .into_inner();
                keys.extend(page.keys);
                token = page.next_page_token;
                if !all || token.is_empty() {
                    break;
                }
            }
            if json_out {
                let mut out = json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() });
                if !token.is_empty() {
                    out["nextPageToken"] = json!(token);
                }
                println!("{}", pretty(&out));
            } else {
                print_table(&keys);
                if !token.is_empty() {
                    println!("more: --page-token {token}   (or --all)");
                }
            }
        }
        KeysCommand::Get { key_id, workspace } => {
            let key = client
                .get_key(authorized(
                    &bearer,
                    pb::GetKeyRequest {
                        workspace_id: workspace,
                        user_id: String::new(),
                        key_id,
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner();
            print_key(&key, json_out);
        }
        KeysCommand::Update {
            key_id,
            workspace,
            name,
            status,
            expires_at,
            no_expiry,
            burst,
            default_burst,
            hourly,
            default_hourly,
            metadata,
            no_metadata,
            scopes,
            unscoped,
        } => {
            // The mask names exactly what was given, so a flag that clears works the same way
            // as one that sets, and nothing else changes.
            let mut paths = Vec::new();
            if name.is_some() {
                paths.push("name");
            }
            if status.is_some() {
                paths.push("status");
            }
            if expires_at.is_some() || no_expiry {
                paths.push("expires_at");
            }
            if metadata.is_some() || no_metadata {
                paths.push("metadata");
            }
            if !scopes.is_empty() || unscoped {
                paths.push("scopes");
            }
            // One window at a time (`rate_limits.burst`), so the other stays as the registry
            // has it: no read-modify-write that a concurrent change could be lost in.
            let mut rate_limits = Vec::new();
            for (window, given, reset, path) in [
                ("burst", burst, default_burst, "rate_limits.burst"),
                ("hourly", hourly, default_hourly, "rate_limits.hourly"),
            ] {
                if let Some((limit, period)) = given {
                    rate_limits.push(window_proto(window, limit, period));
                }
                if given.is_some() || reset {
                    paths.push(path);
                }
            }
            let key = client
                .update_key(authorized(
                    &bearer,
                    pb::UpdateKeyRequest {
                        workspace_id: workspace,
                        key_id,
                        name,
                        status: status_arg(status.as_deref()) as i32,
                        expires_at,
                        rate_limits,
                        metadata,
                        scopes,
                        update_mask: Some(prost_types::FieldMask {
                            paths: paths.into_iter().map(str::to_owned).collect(),
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner();
            print_key(&key, json_out);
        }
        KeysCommand::Rotate {
            key_id,
            workspace,
            grace,
        } => {
            let rotated = client
                .rotate_key(authorized(
                    &bearer,
                    pb::RotateKeyRequest {
                        workspace_id: workspace,
                        user_id: String::new(),
                        key_id,
                        grace_period: prost_types::Duration::try_from(grace).ok(),
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner();
            print_created(rotated.key.as_ref(), &rotated.secret, json_out);
        }
        KeysCommand::Delete { key_id, workspace } => {
            client
                .delete_key(authorized(
                    &bearer,
                    pb::DeleteKeyRequest {
                        workspace_id: workspace,
                        user_id: String::new(),
                        key_id: key_id.clone(),
                    },
                ))
                .await
                .map_err(refused)?;
            if json_out {
                println!("{}", pretty(&json!({ "deleted": key_id })));
            } else {
                println!("deleted {key_id}: it is refused everywhere within a second");
            }
        }
        KeysCommand::Usage {
            key_ids,
            workspace,
            days,
            hourly,
        } => {
            let end = SystemTime::now();
            let start = end - Duration::from_secs(u64::from(days) * 86_400);
            let usage = client
                .get_key_usage(authorized(
                    &bearer,
                    pb::GetKeyUsageRequest {
                        workspace_id: workspace,
                        key_ids,
                        start_time: Some(start.into()),
                        end_time: Some(end.into()),
                        ..Default::default()
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner();
            if json_out {
                println!("{}", pretty(&usage_json(&usage)));
            } else {
                print_usage(&usage, hourly);
            }
        }
        KeysCommand::Audit {
            workspace,
            key,
            user,
            days,
            limit,
            all,
        } => {
            let start = days
                .map(|d| (SystemTime::now() - Duration::from_secs(u64::from(d) * 86_400)).into());
            let mut events = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_audit_events(authorized(
                        &bearer,
                        pb::ListAuditEventsRequest {
                            workspace_id: workspace.clone(),
                            user_id: user.clone().unwrap_or_default(),
                            key_id: key.clone().unwrap_or_default(),
                            start_time: start,
                            end_time: None,
                            page_size: limit,
                            page_token,
                        },
                    ))
                    .await
                    .map_err(refused)?
                    .into_inner();
                events.extend(page.events);
                page_token = page.next_page_token;
                if !all || page_token.is_empty() {
                    break;
                }
            }
            if json_out {
                let list: Vec<Value> = events.iter().map(audit_json).collect();
                println!("{}", pretty(&Value::Array(list)));
            } else if events.is_empty() {
                println!("no events");
            } else {
                print_audit(&events);
            }
        }
        KeysCommand::Sessions {
            command: SessionsCommand::Revoke { workspace, user },
        } => {
            let revoked = client
                .revoke_sessions(authorized(
                    &bearer,
                    pb::RevokeSessionsRequest {
                        workspace_id: workspace,
                        user_id: user.unwrap_or_default(),
                    },
                ))
                .await
                .map_err(refused)?
                .into_inner()
                .revoked;
            if json_out {
                println!("{}", pretty(&json!({ "revoked": revoked })));
            } else {
                println!("revoked {revoked} session(s)");
            }
        }
    }
    Ok(())
}

/// `message` with the admin token and the deadline.
fn authorized<T>(
    bearer: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request.set_timeout(DEADLINE);
    request
}

/// The token from the flag, the file, or the local state directory; never printed.
fn admin_token(keys: &Keys) -> Result<String, KeysError> {
    if let Some(token) = &keys.admin_token {
        return Ok(token.trim().to_owned());
    }
    let (path, said) = match &keys.admin_token_file {
        Some(path) => (path.clone(), "STANNA_ADMIN_TOKEN_FILE"),
        None => (
            keys.state_dir.join(stanna::state::ADMIN_TOKEN_FILE),
            "the state directory",
        ),
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(KeysError::Usage(format!(
            "{} ({said}) is empty",
            path.display()
        ))),
        Err(err) if keys.admin_token_file.is_none() => Err(KeysError::Usage(format!(
            "no admin token: set STANNA_ADMIN_TOKEN or STANNA_ADMIN_TOKEN_FILE (and {} cannot be read: {err})",
            path.display()
        ))),
        Err(err) => Err(KeysError::Usage(format!(
            "{} ({said}) cannot be read: {err}",
            path.display()
        ))),
    }
}

async fn connect(keys: &Keys) -> Result<KeyRegistryClient<tonic::transport::Channel>, KeysError> {
    let url = &keys.registry;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(KeysError::Usage(format!(
            "--registry {url}: give an http:// or https:// URL, e.g. http://127.0.0.1:50051"
        )));
    }
    let tls = &keys.tls;
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| KeysError::Usage(format!("--registry {url}: {e}")))?
        .connect_timeout(DEADLINE);
    if url.starts_with("https://") {
        let loaded = stanna_grpc::GrpcTls::load(&stanna_grpc::GrpcTlsFiles {
            ca: tls.grpc_ca_file.as_deref(),
            client_cert: tls.grpc_client_cert_file.as_deref(),
            client_key: tls.grpc_client_key_file.as_deref(),
            ..Default::default()
        })
        .map_err(|e| KeysError::Usage(e.to_string()))?;
        endpoint = endpoint
            .tls_config(loaded.client().clone())
            .map_err(|e| KeysError::Usage(e.to_string()))?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("{url}: the key registry does not answer"))?;
    Ok(KeyRegistryClient::new(channel))
}

/// A refused call in words: the gRPC code as grpcurl names it, and the registry's message.
fn refused(status: tonic::Status) -> KeysError {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => " (check STANNA_ADMIN_TOKEN)",
        tonic::Code::Unavailable => " (is the key registry running at --registry?)",
        _ => "",
    };
    KeysError::Failed(anyhow::anyhow!(
        "{:?}: {}{hint}",
        status.code(),
        status.message()
    ))
}

fn windows(burst: Option<(u32, Duration)>, hourly: Option<(u32, Duration)>) -> Vec<pb::RateLimit> {
    [("burst", burst), ("hourly", hourly)]
        .into_iter()
        .filter_map(|(name, w)| w.map(|(limit, period)| window_proto(name, limit, period)))
        .collect()
}

fn window_proto(name: &str, limit: u32, period: Duration) -> pb::RateLimit {
    pb::RateLimit {
        name: name.to_owned(),
        limit,
        period: prost_types::Duration::try_from(period).ok(),
    }
}

fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|_| "must be an RFC 3339 time such as 2027-01-01T00:00:00Z".to_owned())?;
    let at: SystemTime = parsed.with_timezone(&chrono::Utc).into();
    Ok(at.into())
}

fn parse_window(text: &str) -> Result<(u32, Duration), String> {
    let window: stanna_keys::WindowLimit = text.parse().map_err(|e| format!("{e}"))?;
    Ok((window.limit(), window.period()))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    stanna_keys::parse_duration(text).map_err(|e| e.to_string())
}

/// A time as the tables show it: RFC 3339 at whole seconds.
fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .map_or_else(|| "-".to_owned(), stanna_keys::time::rfc3339)
}

/// A `--status` value (clap allows only `active` and `inactive`); none is "unspecified".
fn status_arg(status: Option<&str>) -> pb::KeyStatus {
    match status {
        Some("active") => pb::KeyStatus::Active,
        Some(_) => pb::KeyStatus::Inactive,
        None => pb::KeyStatus::Unspecified,
    }
}

fn status_word(key: &pb::ApiKey) -> &'static str {
    match key.status() {
        pb::KeyStatus::Active => "active",
        pb::KeyStatus::Inactive => "inactive",
        pb::KeyStatus::Unspecified => "?",
    }
}

fn limits_text(key: &pb::ApiKey) -> String {
    key.rate_limits
        .iter()
        .map(|l| {
            let period = l
                .period
                .and_then(stanna_proto::convert::std_duration)
                .map_or_else(|| "?".to_owned(), |p| format!("{}s", p.as_secs_f64()));
            let mark = if key.overridden_limits.contains(&l.name) {
                " (override)"
            } else {
                ""
            };
            format!("{} {}/{period}{mark}", l.name, l.limit)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Usage as the REST API shows it (`GET /v1/keys/usage`): counts as numbers, times RFC 3339.
fn usage_json(usage: &pb::GetKeyUsageResponse) -> Value {
    let counts = |c: Option<&pb::UsageCounts>| {
        let c = c.copied().unwrap_or_default();
        json!({
            "allowed": c.allowed,
            "rateLimited": c.rate_limited,
            "inactive": c.inactive,
            "expired": c.expired,
            "forbidden": c.forbidden,
        })
    };
    json!({
        "startTime": time(usage.start_time.as_ref()),
        "endTime": time(usage.end_time.as_ref()),
        "keys": usage.keys.iter().map(|k| json!({
            "keyId": k.key_id,
            "hours": k.hours.iter().map(|h| {
                let mut hour = counts(h.counts.as_ref());
                hour["hour"] = json!(time(h.hour.as_ref()));
                hour
            }).collect::<Vec<_>>(),
            "total": counts(k.total.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// A key in the API's proto3 JSON names (unset fields left out).
fn key_json(key: &pb::ApiKey) -> Value {
    let mut out = json!({
        "id": key.id,
        "workspaceId": key.workspace_id,
        "userId": key.user_id,
        "name": key.name,
        "preview": key.preview,
        "status": key.status().as_str_name(),
        "createdAt": time(key.created_at.as_ref()),
        "updatedAt": time(key.updated_at.as_ref()),
        "rateLimits": key.rate_limits.iter().map(|l| json!({
            "name": l.name,
            "limit": l.limit,
            "period": l.period.and_then(stanna_proto::convert::std_duration).map(|p| format!("{}s", p.as_secs_f64())),
        })).collect::<Vec<_>>(),
    });
    let optional = [
        (
            "lastUsedAt",
            key.last_used_at.as_ref().map(|t| time(Some(t))),
        ),
        ("expiresAt", key.expires_at.as_ref().map(|t| time(Some(t)))),
        (
            "replacedBy",
            Some(key.replaced_by.clone()).filter(|s| !s.is_empty()),
        ),
        (
            "metadata",
            Some(key.metadata.clone()).filter(|s| !s.is_empty()),
        ),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            out[name] = json!(value);
        }
    }
    if !key.overridden_limits.is_empty() {
        out["overriddenLimits"] = json!(key.overridden_limits);
    }
    if !key.scopes.is_empty() {
        out["scopes"] = json!(key.scopes);
    }
    out
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn print_key(key: &pb::ApiKey, json_out: bool) {
    if json_out {
        println!("{}", pretty(&key_json(key)));
        return;
    }
    let rows = [
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("workspace", key.workspace_id.clone()),
        ("user", key.user_id.clone()),
        ("preview", key.preview.clone()),
        ("status", status_word(key).to_owned()),
        ("created", time(key.created_at.as_ref())),
        ("updated", time(key.updated_at.as_ref())),
        ("last used", time(key.last_used_at.as_ref())),
        ("expires", time(key.expires_at.as_ref())),
        ("limits", limits_text(key)),
        ("scopes", scopes_text(key)),
        (
            "replaced by",
            Some(key.replaced_by.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "metadata",
            Some(key.metadata.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    for (label, value) in rows {
        println!("{label:<12} {value}");
    }
}

/// The key's scopes, or what having none means.
fn scopes_text(key: &pb::ApiKey) -> String {
    if key.scopes.is_empty() {
        "* (the user's full permissions)".to_owned()
    } else {
        key.scopes.join(" ")
    }
}

fn print_created(key: Option<&pb::ApiKey>, secret: &str, json_out: bool) {
    let Some(key) = key else {
        return;
    };
    if json_out {
        println!(
            "{}",
            pretty(&json!({ "key": key_json(key), "secret": secret }))
        );
        return;
    }
    print_key(key, false);
    println!();
    println!("secret       {secret}");
    println!("This is the only time the secret is shown: store it now. It cannot be recovered.");
}

fn print_table(keys: &[pb::ApiKey]) {
    if keys.is_empty() {
        println!("no keys");
        return;
    }
    let header = [
        "ID",
        "NAME",
        "USER",
        "STATUS",
        "PREVIEW",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "SCOPES",
    ];
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.name.clone(),
                k.user_id.clone(),
                status_word(k).to_owned(),
                k.preview.clone(),
                time(k.created_at.as_ref()),
                time(k.last_used_at.as_ref()),
                time(k.expires_at.as_ref()),
                // `*`: the user's full permissions.
                if k.scopes.is_empty() {
                    "*".to_owned()
                } else {
                    k.scopes.join(",")
                },
            ]
        })
        .collect();
    print_columns(header, &rows);
}

/// Prints `rows` under `header`, each column as wide as its widest cell.
fn print_columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// An audit event as `GET /v1/audit` shows it.
fn audit_json(e: &pb::AuditEvent) -> Value {
    let state = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let actor = e.actor.clone().unwrap_or_default();
    let mut event = json!({
        "id": e.id,
        "time": time(e.time.as_ref()),
        "action": e.action,
        "userId": e.user_id,
        "actor": { "kind": actor.kind, "id": actor.id },
        "requestId": e.request_id,
    });
    for (name, value) in [
        ("keyId", &e.key_id),
        ("relatedKeyId", &e.related_key_id),
        ("sessionId", &e.session_id),
    ] {
        if !value.is_empty() {
            event[name] = json!(value);
        }
    }
    if !actor.user_id.is_empty() {
        event["actor"]["userId"] = json!(actor.user_id);
    }
    if !e.before.is_empty() {
        event["before"] = state(&e.before);
    }
    if !e.after.is_empty() {
        event["after"] = state(&e.after);
    }
    event
}

/// Audit events as a table: the changed fields as `field: before → after`.
fn print_audit(events: &[pb::AuditEvent]) {
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            let actor = e.actor.clone().unwrap_or_default();
            let subject = if e.key_id.is_empty() {
                format!("session {}", e.session_id)
            } else {
                e.key_id.clone()
            };
            [
                time(e.time.as_ref()),
                e.action.clone(),
                subject,
                format!("{} {}", actor.kind, actor.id),
                change_text(&e.before, &e.after),
            ]
        })
        .collect();
    print_columns(["TIME", "ACTION", "SUBJECT", "BY", "CHANGE"], &rows);
}

/// `name: "a" → "b", status: "active" → "inactive"`: each changed field once.
fn change_text(before: &str, after: &str) -> String {
    let object = |s: &str| match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (object(before), object(after));
    let mut fields: Vec<&String> = after.keys().chain(before.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .iter()
        .map(|f| {
            let show = |m: &serde_json::Map<String, Value>| {
                m.get(*f).map_or_else(|| "-".to_owned(), Value::to_string)
            };
            format!("{f}: {} → {}", show(&before), show(&after))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Usage counts as table cells: allowed, rate-limited, inactive, expired, forbidden.
fn count_cells(c: Option<&pb::UsageCounts>) -> [String; 5] {
    let c = c.copied().unwrap_or_default();
    [
        c.allowed,
        c.rate_limited,
        c.inactive,
        c.expired,
        c.forbidden,
    ]
    .map(|n| n.to_string())
}

/// `stanna keys usage`: one line per key (totals), or with `hourly` one per key and hour.
fn print_usage(usage: &pb::GetKeyUsageResponse, hourly: bool) {
    println!(
        "from {} to {}",
        time(usage.start_time.as_ref()),
        time(usage.end_time.as_ref())
    );
    if usage.keys.is_empty() {
        println!("no such keys");
        return;
    }
    let counts = [
        "ALLOWED",
        "RATE LIMITED",
        "INACTIVE",
        "EXPIRED",
        "FORBIDDEN",
    ];
    if hourly {
        let header = [
            "ID", "HOUR", counts[0], counts[1], counts[2], counts[3], counts[4],
        ];
        let rows: Vec<[String; 7]> = usage
            .keys
            .iter()
            .flat_map(|k| {
                k.hours.iter().map(|h| {
                    let [a, r, i, e, f] = count_cells(h.counts.as_ref());
                    [k.key_id.clone(), time(h.hour.as_ref()), a, r, i, e, f]
                })
            })
            .collect();
        print_columns(header, &rows);
    } else {
        let header = ["ID", counts[0], counts[1], counts[2], counts[3], counts[4]];
        let rows: Vec<[String; 6]> = usage
            .keys
            .iter()
            .map(|k| {
                let [a, r, i, e, f] = count_cells(k.total.as_ref());
                [k.key_id.clone(), a, r, i, e, f]
            })
            .collect();
        print_columns(header, &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_times_parse_as_the_api_takes_them() {
        assert_eq!(parse_window("20/60s"), Ok((20, Duration::from_secs(60))));
        assert!(parse_window("20").is_err());
        assert!(parse_window("0/60s").is_err());
        assert_eq!(
            parse_time("2027-01-01T00:00:00Z").unwrap().seconds,
            1_798_761_600
        );
        assert_eq!(
            parse_time("2027-01-01T01:00:00+01:00").unwrap().seconds,
            1_798_761_600
        );
        assert!(parse_time("tomorrow").is_err());
    }
}
