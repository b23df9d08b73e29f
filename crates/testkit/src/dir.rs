//! Temporary directories and unique names.

use std::path::{Path, PathBuf};

use rand::RngExt;

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
