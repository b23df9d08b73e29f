//! The public id of a key: 12 base62 characters, embedded in the key itself. Not a secret: it is
//! shown in previews and URLs.

use std::fmt;

use crate::base62;
use crate::domain::DomainError;

/// Characters in the public key id.
pub const KEY_ID_LEN: usize = 12;

/// The public id of a key: 12 base62 characters, embedded in the key itself. Not a secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Checks a key id given on its own (e.g. in a GetKey request).
    ///
    /// # Errors
    /// [`DomainError::KeyId`] unless it is exactly 12 base62 characters.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let bytes =
            <[u8; KEY_ID_LEN]>::try_from(value.as_bytes()).map_err(|_| DomainError::KeyId)?;
        if !bytes.iter().all(|&b| base62::is_digit(b)) {
            return Err(DomainError::KeyId);
        }
        Ok(Self(bytes))
    }

    /// Wraps bytes already checked to be base62 (by the key parser).
    pub(crate) fn from_checked_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only base62 ASCII is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_twelve_base62_characters() {
        assert!(KeyId::parse("AbCdEf012345").is_ok());
        for bad in ["", "AbCdEf01234", "AbCdEf0123456", "AbCdEf01234-"] {
            assert_eq!(
                KeyId::parse(bad),
                Err(DomainError::KeyId),
                "{bad:?} accepted"
            );
        }
    }
}
