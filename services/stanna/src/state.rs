//! The state directory of an all-in-one `stanna serve` (`STANNA_STATE_DIR`, default the working
//! directory): what it generates when nothing is configured — the admin token and the session
//! secret — in owner-only files, reused across restarts, so a newcomer's sign-in links and
//! grpcurl commands keep working after a restart.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rand::RngExt;

/// The admin token's file in the state directory.
pub const ADMIN_TOKEN_FILE: &str = "stanna-admin-token";
/// The session secret's file in the state directory.
pub const SESSION_SECRET_FILE: &str = "stanna-session-secret";

/// A value read from, or generated into, the state directory.
pub struct Kept {
    /// The value.
    pub value: String,
    /// Where it is kept.
    pub path: PathBuf,
    /// Whether this run made it (else it was read).
    pub generated: bool,
}

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("STANNA_STATE_DIR: {path}: {reason}")]
pub struct StateError {
    path: String,
    reason: String,
}

/// `name` in `dir`: read when it exists (it must be owner-only and hold at least `min_len`
/// characters), else `len` random base62 characters written to a new owner-only file.
///
/// # Errors
/// [`StateError`] for a directory that cannot be created, a file others may read, or one that
/// is unreadable or too short.
pub fn keep(dir: &Path, name: &str, len: usize, min_len: usize) -> Result<Kept, StateError> {
    let path = dir.join(name);
    let fail = |reason: String| StateError {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::metadata(&path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(fail(format!(
                    "others may read it (mode {:o}); run chmod 600 on it",
                    meta.permissions().mode() & 0o777
                )));
            }
            let value = std::fs::read_to_string(&path)
                .map_err(|e| fail(e.to_string()))?
                .trim_end()
                .to_owned();
            if value.len() < min_len || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail(format!(
                    "must hold at least {min_len} printable characters; delete it to have a new one made"
                )));
            }
            Ok(Kept {
                value,
                path,
                generated: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            let value = random(len);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| fail(e.to_string()))?;
            file.write_all(format!("{value}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            Ok(Kept {
                value,
                path,
                generated: true,
            })
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// `len` base62 characters from the OS random source.
pub(crate) fn random(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_owner_only_and_then_reused() {
        let dir = stanna_testkit::TempDir::new();
        let first = keep(dir.path(), "x", 40, 32).unwrap();
        assert!(first.generated);
        assert_eq!(first.value.len(), 40);
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = keep(dir.path(), "x", 40, 32).unwrap();
        assert!(!again.generated);
        assert_eq!(again.value, first.value);
        std::fs::set_permissions(&first.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = keep(dir.path(), "x", 40, 32).err().unwrap().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        assert!(!refused.contains(&first.value));
    }
}
