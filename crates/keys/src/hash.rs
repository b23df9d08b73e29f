//! argon2id hashing of whole keys, stored as PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
//!
//! The parameters travel inside each stored hash, so raising them later affects only new keys and
//! old keys keep verifying. argon2 is slow by design (tens of milliseconds at the defaults): callers
//! run it on a blocking thread and keep it off any warm path.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

use crate::format::PresentedKey;

/// Why hashing or verification could not be carried out (a wrong key is not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The configured cost parameters are out of argon2's ranges.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed (e.g. the OS random source for the salt).
    #[error("argon2 hashing failed: {0}")]
    Hash(String),
    /// A stored hash is not a PHC string argon2 can read.
    #[error("stored hash is not a valid argon2 PHC string")]
    StoredHash,
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (OWASP: 19456 = 19 MiB).
    pub m_kib: u32,
    /// Iterations (OWASP: 2).
    pub t: u32,
    /// Lanes (OWASP: 1).
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's recommendation for argon2id: m=19 MiB, t=2, p=1.
    fn default() -> Self {
        Self {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    /// The cheapest parameters argon2 accepts: for tests that are not about hashing cost.
    pub fn insecure_fast_for_tests() -> Self {
        Self {
            m_kib: 8,
            t: 1,
            p: 1,
        }
    }
}

/// Hashes new keys with the configured parameters and verifies presented keys against stored hashes.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    /// Checked once at construction so hashing never fails on bad configuration.
    params: Params,
}

impl KeyHasher {
    /// Checks the parameters against argon2's ranges.
    ///
    /// # Errors
    /// [`HashError::Params`] when argon2 refuses them (e.g. memory below 8 × lanes KiB).
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let params = Params::new(params.m_kib, params.t, params.p, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes the whole key with a fresh random salt; returns the PHC string to store.
    ///
    /// # Errors
    /// [`HashError::Hash`] if argon2 or the salt source fails.
    pub fn hash(&self, key: &PresentedKey) -> Result<String, HashError> {
        let hash: PasswordHash = self
            .argon2()
            .hash_password(key.expose_bytes())
            .map_err(|e| HashError::Hash(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Checks `key` against a stored PHC string, using the parameters recorded in it. The final
    /// comparison is constant time (inside the argon2 crate).
    ///
    /// # Errors
    /// [`HashError::StoredHash`] if `stored` cannot be read; a wrong key is `Ok(false)`.
    pub fn verify(&self, key: &PresentedKey, stored: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(stored).map_err(|_| HashError::StoredHash)?;
        match self.argon2().verify_password(key.expose_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(_) => Err(HashError::StoredHash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GeneratedKey;

    fn key() -> PresentedKey {
        *GeneratedKey::generate().unwrap().key()
    }

    #[test]
    fn a_key_verifies_against_its_own_hash_only() {
        let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
        let (a, b) = (key(), key());
        let stored = hasher.hash(&a).unwrap();
        assert!(hasher.verify(&a, &stored).unwrap());
        assert!(!hasher.verify(&b, &stored).unwrap(), "another key verified");
    }

    #[test]
    fn stored_hash_is_argon2id_phc_with_the_configured_cost_and_no_plaintext() {
        let hasher = KeyHasher::new(HashParams::default()).unwrap();
        let key = key();
        let secret = std::str::from_utf8(key.expose_bytes()).unwrap().to_owned();
        let stored = hasher.hash(&key).unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains(&secret[15..47]));
        assert_ne!(stored, hasher.hash(&key).unwrap(), "salts must differ");
    }

    #[test]
    fn hashes_made_with_other_parameters_still_verify() {
        let old = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
        let new = KeyHasher::new(HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        })
        .unwrap();
        let key = key();
        assert!(new.verify(&key, &old.hash(&key).unwrap()).unwrap());
    }

    #[test]
    fn garbage_stored_hash_is_an_error_not_a_match() {
        let hasher = KeyHasher::new(HashParams::insecure_fast_for_tests()).unwrap();
        assert_eq!(
            hasher.verify(&key(), "not a hash"),
            Err(HashError::StoredHash)
        );
    }

    #[test]
    fn out_of_range_parameters_are_refused_up_front() {
        assert!(matches!(
            KeyHasher::new(HashParams {
                m_kib: 1,
                t: 1,
                p: 1
            }),
            Err(HashError::Params(_))
        ));
        assert!(matches!(
            KeyHasher::new(HashParams {
                m_kib: 64,
                t: 0,
                p: 1
            }),
            Err(HashError::Params(_))
        ));
    }
}
