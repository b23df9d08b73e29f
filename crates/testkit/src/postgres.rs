//! PostgreSQL for tests: a database of the test's own on the server `DATABASE_URL` names, dropped
//! when the test ends, so tests never write into the shared database and a kept CI machine never
//! fills up.

use sea_orm::{ConnectionTrait, Database};

/// `DATABASE_URL`, or `None` after a loud skip line for `test`.
pub fn postgres_url(test: &str) -> Option<String> {
    crate::server_url("DATABASE_URL", "PostgreSQL", test)
}

/// A database of one test's own, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct PostgresDatabase {
    url: String,
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: drop may run inside or outside a runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = Database::connect(admin_url.as_str()).await.ok()?;
                let result = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                admin.close().await.ok();
                result.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("WARNING could not drop the test database {}", self.name);
        }
    }
}

/// Creates a new, empty database next to the one `DATABASE_URL` names, so the test owns its
/// schema; `None` (after a loud skip) when `DATABASE_URL` is unset.
///
/// # Panics
/// If `DATABASE_URL` is set but the server refuses: in CI that is a failure, not a skip.
pub async fn fresh_postgres_database(test: &str) -> Option<PostgresDatabase> {
    let admin_url = postgres_url(test)?;
    let name = format!("stanna_test_{}", crate::random_suffix());
    let admin = Database::connect(admin_url.as_str())
        .await
        .expect("connect to DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    Some(PostgresDatabase {
        url: crate::urls::with_database(&admin_url, &name),
        admin_url,
        name,
    })
}

/// [`fresh_postgres_database`] for a test that is not async.
///
/// # Panics
/// As [`fresh_postgres_database`].
pub fn fresh_postgres_database_blocking(test: &str) -> Option<PostgresDatabase> {
    let test = test.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(fresh_postgres_database(&test))
    })
    .join()
    .expect("creating the test database")
}
