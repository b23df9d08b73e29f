//! Helpers shared by the test suites: a temporary directory, a fresh database per test, and a loud
//! skip when a shared server is not configured.
//!
//! Tests find PostgreSQL and Redis through `DATABASE_URL` and `REDIS_URL` (the product itself reads
//! only `STANNA_*` names). Unset — a laptop without those servers — the variants that need them
//! print a `SKIPPED` line and return; `.ci/run` sets both, so in CI they always run.

use std::path::{Path, PathBuf};

use rand::RngExt;
use sea_orm::{ConnectionTrait, Database};

/// A directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    /// The directory's path.
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty directory with a random name.
    ///
    /// # Panics
    /// If the directory cannot be created (a broken test machine).
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("stanna-test-{}", random_suffix()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `sqlite://` URL for a new database file in this directory.
    pub fn sqlite_url(&self) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.path.join("stanna.db").display()
        )
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// 12 random lowercase letters and digits, for unique names.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..12)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

/// Prints a line that says loudly which test was skipped and why.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    println!("SKIPPED {test}: {why}");
}

/// `DATABASE_URL`, or `None` after a loud skip line for `test`.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "DATABASE_URL is not set, so the PostgreSQL variant did not run",
            );
            None
        }
    }
}

/// `REDIS_URL`, or `None` after a loud skip line for `test`.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "REDIS_URL is not set, so the Redis variant did not run",
            );
            None
        }
    }
}

/// Creates a new, empty PostgreSQL database next to the one `DATABASE_URL` names and returns its
/// URL, so each test owns its schema; `None` (after a loud skip) when `DATABASE_URL` is unset.
///
/// # Panics
/// If `DATABASE_URL` is set but the server refuses: in CI that is a failure, not a skip.
pub async fn fresh_postgres_database(test: &str) -> Option<String> {
    let admin_url = postgres_url(test)?;
    let name = format!("stanna_test_{}", random_suffix());
    let admin = Database::connect(admin_url.as_str())
        .await
        .expect("connect to DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    Some(replace_database_name(&admin_url, &name))
}

/// Swaps the database name in a `postgres://…/name?params` URL.
fn replace_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database_name;

    #[test]
    fn database_name_is_replaced_wherever_the_url_puts_it() {
        assert_eq!(
            replace_database_name("postgres://127.0.0.1:5432/test", "x"),
            "postgres://127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database_name("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_database_name("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
