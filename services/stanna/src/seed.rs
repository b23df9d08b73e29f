//! `stanna seed`: fills a store with filler keys for load tests and capacity measurements — a
//! million in about a minute on PostgreSQL (docs/auth-check.md, "At a million keys").
//!
//! Filler keys are hashed with argon2's cheapest parameters (8 KiB, one pass): each stored hash
//! carries its own parameters, so they verify like any key, only cheaply. That is why this is a
//! tool for test databases and never for real ones, and why it writes no audit events. Their
//! secrets are printed only when asked (`--print-secrets`, one per line on standard output: this
//! is their create response), never logged.

use std::time::{Duration, SystemTime};

use stanna_keys::{GeneratedKey, HashParams, KeyHasher, KeyName, Scopes, UserId, WorkspaceId};
use stanna_store::{KeyStore, LimitOverrides, LoadedKey, NewKey, StoreError};

/// Keys generated and stored per step (one multi-row load).
const STEP: usize = 2000;

/// Keys per workspace outside the big one.
pub const WORKSPACE_SIZE: usize = 100;

/// The workspace that holds the first `--workspace-keys` keys.
pub const BIG_WORKSPACE: &str = "ws_seed_big";

/// Users each workspace's keys are spread over.
const USERS: usize = 10;

/// What to seed.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// The store to fill (the same setting as `stanna serve`).
    #[arg(
        long,
        env = "STANNA_DATABASE_URL",
        hide_env_values = true,
        value_parser = stanna_config::database_url
    )]
    pub database_url: String,

    /// Keys to store in all, 1 to 10 000 000.
    #[arg(long, default_value_t = 1_000_000,
        value_parser = stanna_config::count_in(1usize, 10_000_000))]
    pub keys: usize,

    /// How many of them go to the one workspace `ws_seed_big` (the rest: 100 per workspace
    /// `ws_seed_N`), 0 to 10 000 000.
    #[arg(long, default_value_t = 100_000,
        value_parser = stanna_config::count_in(0usize, 10_000_000))]
    pub workspace_keys: usize,

    /// Percent of the keys stored deleted (tombstones, deleted within the last 7 days), 0 to 99.
    #[arg(long, default_value_t = 10, value_parser = stanna_config::count_in(0u8, 99))]
    pub deleted_percent: u8,

    /// Print each live key's secret on standard output, one per line (`ws_seed_big`'s first).
    #[arg(long)]
    pub print_secrets: bool,
}

/// The shape of a seed, without the store.
#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    /// Keys in all.
    pub keys: usize,
    /// Keys in [`BIG_WORKSPACE`].
    pub workspace_keys: usize,
    /// Percent stored deleted.
    pub deleted_percent: u8,
    /// Created over this span before `now`, oldest first (deleted ones within the last 7 days).
    pub span: Duration,
}

impl SeedPlan {
    /// The plan of `args`: keys created over the past year.
    pub fn of(args: &SeedArgs) -> Self {
        Self {
            keys: args.keys,
            workspace_keys: args.workspace_keys.min(args.keys),
            deleted_percent: args.deleted_percent,
            span: Duration::from_secs(365 * 86_400),
        }
    }
}

/// What a seed stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seeded {
    /// Keys stored live.
    pub live: usize,
    /// Keys stored deleted.
    pub deleted: usize,
}

/// Errors of a seed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The store refused or failed.
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    /// Generating or hashing a key failed (the OS random source).
    #[error("generating a key: {0}")]
    Generate(String),
}

/// Stores the keys of `plan` as of `now`, in steps of 2 000 generated on the blocking pool while
/// the previous step is written. `secret` is called with each live key's secret, in order.
///
/// # Errors
/// [`SeedError`]; the steps before it are stored.
pub async fn seed(
    store: &KeyStore,
    plan: SeedPlan,
    now: SystemTime,
    mut secret: impl FnMut(&str),
) -> Result<Seeded, SeedError> {
    let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests())
        .map_err(|e| SeedError::Generate(e.to_string()))?;
    let mut seeded = Seeded::default();
    let mut next = Some(tokio::task::spawn_blocking({
        let hasher = hasher.clone();
        move || generate(&hasher, plan, now, 0)
    }));
    let mut start = 0;
    while let Some(step) = next.take() {
        let (keys, secrets) = step
            .await
            .map_err(|e| SeedError::Generate(e.to_string()))??;
        start += keys.len();
        if start < plan.keys {
            let hasher = hasher.clone();
            next = Some(tokio::task::spawn_blocking(move || {
                generate(&hasher, plan, now, start)
            }));
        }
        store.load_keys(&keys).await?;
        for s in &secrets {
            secret(s);
        }
        let deleted = keys.iter().filter(|k| k.deleted_at.is_some()).count();
        seeded.deleted += deleted;
        seeded.live += keys.len() - deleted;
    }
    Ok(seeded)
}

/// Keys `start..start + STEP` of `plan` (fewer at the end), and the live ones' secrets.
fn generate(
    hasher: &KeyHasher,
    plan: SeedPlan,
    now: SystemTime,
    start: usize,
) -> Result<(Vec<LoadedKey>, Vec<String>), SeedError> {
    let end = (start + STEP).min(plan.keys);
    let mut keys = Vec::with_capacity(end - start);
    let mut secrets = Vec::new();
    let name =
        KeyName::parse("seeded filler key").map_err(|e| SeedError::Generate(e.to_string()))?;
    let gap = plan.span.as_micros() as u64 / plan.keys.max(1) as u64;
    for i in start..end {
        let generated = GeneratedKey::generate().map_err(|e| SeedError::Generate(e.to_string()))?;
        let key = generated.key();
        let key_hash = hasher
            .hash(key)
            .map_err(|e| SeedError::Generate(e.to_string()))?;
        let (workspace, user) = owner(plan, i);
        // The newest last, a distinct microsecond each, so listings page over real times.
        let created_at = now - Duration::from_micros(gap * (plan.keys - i) as u64 + 1);
        let deleted = (i % 100) < usize::from(plan.deleted_percent);
        let deleted_at = deleted.then(|| {
            // Within the last 7 days (after its creation): past the change poll's overlap and
            // inside the default tombstone retention.
            let week = Duration::from_secs(7 * 86_400);
            let at = now - Duration::from_micros((i as u64 * 7_919) % week.as_micros() as u64);
            at.max(created_at)
        });
        let (key_id, preview) = (key.key_id(), key.preview());
        if !deleted {
            secrets.push(generated.into_secret());
        }
        keys.push(LoadedKey {
            key: NewKey {
                key_id,
                preview,
                key_hash,
                workspace,
                user,
                name: name.clone(),
                expires_at: None,
                rate_limits: LimitOverrides::default(),
                metadata: None,
                scopes: Scopes::default(),
            },
            created_at,
            deleted_at,
        });
    }
    Ok((keys, secrets))
}

/// The workspace and user of key `i`.
fn owner(plan: SeedPlan, i: usize) -> (WorkspaceId, UserId) {
    let workspace = if i < plan.workspace_keys {
        BIG_WORKSPACE.to_owned()
    } else {
        format!("ws_seed_{}", (i - plan.workspace_keys) / WORKSPACE_SIZE)
    };
    let user = format!("seed_user_{}", i % USERS);
    (
        WorkspaceId::parse(&workspace).expect("a seed workspace id is an identifier"),
        UserId::parse(&user).expect("a seed user id is an identifier"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_to_the_big_workspace_first_then_a_hundred_per_workspace() {
        let plan = SeedPlan {
            keys: 1000,
            workspace_keys: 300,
            deleted_percent: 10,
            span: Duration::from_secs(86_400),
        };
        assert_eq!(owner(plan, 0).0.as_str(), BIG_WORKSPACE);
        assert_eq!(owner(plan, 299).0.as_str(), BIG_WORKSPACE);
        assert_eq!(owner(plan, 300).0.as_str(), "ws_seed_0");
        assert_eq!(owner(plan, 399).0.as_str(), "ws_seed_0");
        assert_eq!(owner(plan, 400).0.as_str(), "ws_seed_1");
    }
}
