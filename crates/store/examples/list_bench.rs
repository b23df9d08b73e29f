//! Times ListKeys' queries on one workspace of many keys: the first and a deep page unfiltered,
//! and each search filter (a name substring matching 10 % of keys, one matching a single key, one
//! matching none; a status; "not used for 30 days").
//!
//! ```text
//! cargo run --release -p stanna-store --example list_bench -- postgres://postgres@127.0.0.1:5432/bench 100000
//! cargo run --release -p stanna-store --example list_bench -- sqlite:///tmp/bench.db?mode=rwc 100000
//! ```
//!
//! The database must be empty or hold only a previous run's seed (it is reused when the count
//! matches). Seeded rows carry a placeholder hash: what is measured is the listing, not argon2.
//! One key in ten is deleted (tombstones stay in the table and the index, as in production), one
//! in five inactive, and half were used at some time in the last 60 days.

use std::time::{Duration, Instant, SystemTime};

use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait, PaginatorTrait, Statement};
use stanna_keys::{KeyStatus, WorkspaceId};
use stanna_store::entity::{self, ActiveModel};
use stanna_store::{KeyFilter, KeyStore, PageRequest, Scope};

const WORKSPACE: &str = "ws_bench";
const ROUNDS: usize = 21;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: list_bench DATABASE_URL [KEYS]")?;
    let keys: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let store = KeyStore::connect(&url).await?;
    let now = SystemTime::now();
    seed(&store, keys, now).await?;
    let scope = Scope::new(WorkspaceId::parse(WORKSPACE)?, None);

    let named = |text: &str| KeyFilter {
        name_contains: Some(text.to_owned()),
        ..KeyFilter::default()
    };
    let cases: Vec<(&str, KeyFilter, usize)> = vec![
        ("first page, no filter", KeyFilter::default(), 0),
        ("100th page, no filter", KeyFilter::default(), 99),
        ("name ~ 10 % of keys", named("billing"), 0),
        ("name ~ 1 key", named("needle-in-the-haystack"), 0),
        ("name ~ no key", named("no such name"), 0),
        (
            "status inactive",
            KeyFilter {
                status: Some(KeyStatus::Inactive),
                ..KeyFilter::default()
            },
            0,
        ),
        (
            "unused 30 days",
            KeyFilter {
                unused_for_days: Some(30),
                ..KeyFilter::default()
            },
            0,
        ),
    ];
    println!("{keys} keys in {WORKSPACE} on {url}; median of {ROUNDS} calls, page size 50");
    for (label, filter, skip) in cases {
        // Walk to the page once (its token), then time that page alone.
        let mut after = None;
        for _ in 0..skip {
            after = list(&store, &scope, &filter, after, now).await?.next;
        }
        let mut times = Vec::with_capacity(ROUNDS);
        let mut found = 0;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let page = list(&store, &scope, &filter, after, now).await?;
            times.push(start.elapsed());
            found = page.keys.len();
        }
        times.sort();
        println!(
            "{label:<24} {:>8.2} ms  ({found} keys)",
            ms(times[ROUNDS / 2])
        );
    }
    if store.connection().get_database_backend() == DatabaseBackend::Postgres {
        let plan = store
            .connection()
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!(
                    "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM api_keys WHERE workspace_id = \
                     '{WORKSPACE}' AND deleted_at IS NULL AND name_folded LIKE '%no such name%' \
                     ORDER BY created_at DESC, key_id DESC LIMIT 51"
                ),
            ))
            .await?;
        for row in plan {
            println!("  {}", row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(())
}

async fn list(
    store: &KeyStore,
    scope: &Scope,
    filter: &KeyFilter,
    after: Option<stanna_store::PageToken>,
    now: SystemTime,
) -> Result<stanna_store::Page, stanna_store::StoreError> {
    store
        .list(
            scope,
            PageRequest {
                size: 50,
                after,
                filter: filter.clone(),
            },
            now,
        )
        .await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Inserts `keys` rows in batches of 1 000 unless the workspace already holds that many.
async fn seed(
    store: &KeyStore,
    keys: u64,
    now: SystemTime,
) -> Result<(), Box<dyn std::error::Error>> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let have = entity::Entity::find()
        .filter(entity::Column::WorkspaceId.eq(WORKSPACE))
        .count(store.connection())
        .await?;
    if have == keys {
        return Ok(());
    }
    if have != 0 {
        return Err(
            format!("{WORKSPACE} holds {have} keys, not {keys}: use an empty database").into(),
        );
    }
    let now_us = now.duration_since(SystemTime::UNIX_EPOCH)?.as_micros() as i64;
    let day_us = 86_400_000_000_i64;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..keys {
        let id = format!("{i:0>12}");
        let name = match i {
            _ if i == keys / 2 => "Needle-in-the-haystack".to_owned(),
            _ if i % 10 == 3 => format!("Billing export {i}"),
            _ => format!("Service key {i}"),
        };
        // Created over the last 400 days, oldest first.
        let created_at = now_us - 400 * day_us + (i as i64) * (400 * day_us / keys as i64);
        batch.push(ActiveModel {
            key_id: Set(id),
            workspace_id: Set(WORKSPACE.to_owned()),
            user_id: Set(format!("user{}", i % 50)),
            name_folded: Set(stanna_keys::fold_for_search(&name)),
            name: Set(name),
            preview: Set("sk-0000...0000".to_owned()),
            key_hash: Set("$argon2id$placeholder".to_owned()),
            status: Set(if i % 5 == 1 { "inactive" } else { "active" }.to_owned()),
            created_at: Set(created_at),
            updated_at: Set(created_at),
            last_used_at: Set((i % 2 == 0).then(|| now_us - ((i * 7919) % 60) as i64 * day_us)),
            expires_at: Set(None),
            deleted_at: Set((i % 10 == 7).then_some(created_at + 1)),
            replaced_by: Set(None),
            burst_limit: Set(None),
            burst_period_ms: Set(None),
            hourly_limit: Set(None),
            hourly_period_ms: Set(None),
            metadata: Set(None),
            scopes: Set(None),
        });
        if batch.len() == 1000 || i + 1 == keys {
            entity::Entity::insert_many(std::mem::take(&mut batch))
                .exec_without_returning(store.connection())
                .await?;
        }
    }
    if store.connection().get_database_backend() == DatabaseBackend::Postgres {
        store
            .connection()
            .execute_unprepared("ANALYZE api_keys")
            .await?;
    }
    println!(
        "seeded {keys} keys in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
