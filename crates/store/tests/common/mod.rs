//! What the store's test files share: a fresh store on SQLite (always) or PostgreSQL (when
//! `DATABASE_URL` is set), and the macro that runs a test on both.

use stanna_store::KeyStore;
use stanna_testkit::TempDir;

/// A store plus whatever keeps its database alive.
pub struct Fixture {
    pub store: KeyStore,
    _dir: Option<TempDir>,
    /// The test's own PostgreSQL database, dropped after the test.
    _database: Option<stanna_testkit::PostgresDatabase>,
}

pub async fn sqlite() -> Fixture {
    let dir = TempDir::new();
    let store = KeyStore::connect(&dir.sqlite_url())
        .await
        .expect("open SQLite");
    Fixture {
        store,
        _dir: Some(dir),
        _database: None,
    }
}

pub async fn postgres(test: &str) -> Option<Fixture> {
    let database = stanna_testkit::fresh_postgres_database(test).await?;
    let store = KeyStore::connect(database.url())
        .await
        .expect("connect PostgreSQL");
    Some(Fixture {
        store,
        _dir: None,
        _database: Some(database),
    })
}

/// Runs each named `async fn(KeyStore)` as a test on SQLite and on PostgreSQL (each with a
/// database of its own, named after the test).
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test($crate::common::sqlite().await.store).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $test() {
                if let Some(f) = $crate::common::postgres(concat!(module_path!(), "::", stringify!($test))).await {
                    super::$test(f.store).await
                }
            })*
        }
    };
}
