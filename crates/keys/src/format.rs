//! The key format: generation from the OS CSPRNG, parsing with precise errors, checksum, preview.
//!
//! Parsing never allocates: a [`PresentedKey`] is a fixed 53-byte array, so the warm Verify path
//! can parse every request for free. Neither [`PresentedKey`] nor [`GeneratedKey`] prints its secret
//! through `Debug` or `Display`: both show the preview.

use std::fmt;

use crate::base62;
pub use crate::key_id::KEY_ID_LEN;
use crate::key_id::KeyId;

/// Every key starts with this.
pub const PREFIX: &str = "sk-";
/// Characters in the secret (32 × log2(62) ≈ 190 bits).
pub const SECRET_LEN: usize = 32;
/// Characters in the base62 CRC32 checksum (62⁶ > 2³²).
pub const CHECKSUM_LEN: usize = 6;
/// Characters in a whole key: 3 + 12 + 32 + 6.
pub const KEY_LEN: usize = PREFIX.len() + KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;

const ID_START: usize = PREFIX.len();
const SECRET_START: usize = ID_START + KEY_ID_LEN;
const CHECKSUM_START: usize = SECRET_START + SECRET_LEN;

/// Why a presented string is not a key of our format. The messages name the part that is wrong and
/// never repeat any of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    /// Nothing was presented.
    #[error("no key was given")]
    Empty,
    /// The key does not start with `sk-`.
    #[error("the key must start with \"sk-\"")]
    Prefix,
    /// The key is wrapped in quotes (pasted from JSON or a shell line).
    #[error("the key is in quotes: send it without them")]
    Quoted,
    /// Whitespace inside or around the key (a copied key often brings a space or a newline).
    #[error("character {position} of the key is whitespace: remove it")]
    Whitespace {
        /// 1-based position in the presented string.
        position: usize,
    },
    /// A character outside `0-9A-Za-z` after the prefix (or whitespace before it).
    #[error(
        "character {position} of the key is not allowed: after \"sk-\" a key has only 0-9, A-Z and a-z"
    )]
    Character {
        /// 1-based position in the presented string, counting the `sk-` prefix.
        position: usize,
    },
    /// The key has the wrong number of characters.
    #[error("the key must be {KEY_LEN} characters long, but has {actual}")]
    Length {
        /// Characters presented.
        actual: usize,
    },
    /// The checksum (the last 6 characters) does not match the rest.
    #[error("the key's checksum does not match: it was mistyped, truncated or made up")]
    Checksum,
}

/// A key a client presented, checked for format and checksum (not yet verified against the store).
///
/// `Debug` and `Display` show the preview (`sk-1234...abcd`), never the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PresentedKey {
    /// The whole key, ASCII base62 after the prefix; never printed.
    bytes: [u8; KEY_LEN],
}

impl PresentedKey {
    /// Checks `input` against the key format: prefix, characters, length, checksum, in that order.
    ///
    /// # Errors
    /// [`MalformedKey`] naming the first part that is wrong.
    pub fn parse(input: &str) -> Result<Self, MalformedKey> {
        if input.is_empty() {
            return Err(MalformedKey::Empty);
        }
        let Some(rest) = input.strip_prefix(PREFIX) else {
            // A pasted key often carries a leading space, a newline or quotes: say so, not
            // "prefix".
            if input.starts_with(char::is_whitespace) {
                return Err(MalformedKey::Whitespace { position: 1 });
            }
            if input.starts_with(['"', '\'']) && input[1..].starts_with(PREFIX) {
                return Err(MalformedKey::Quoted);
            }
            return Err(MalformedKey::Prefix);
        };
        if let Some((index, c)) = rest
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_alphanumeric())
        {
            let position = PREFIX.len() + index + 1;
            if c.is_whitespace() {
                return Err(MalformedKey::Whitespace { position });
            }
            if matches!(c, '"' | '\'') && index + 1 == rest.chars().count() {
                return Err(MalformedKey::Quoted);
            }
            return Err(MalformedKey::Character { position });
        }
        // All ASCII from here on, so bytes and characters agree.
        let Ok(bytes) = <[u8; KEY_LEN]>::try_from(input.as_bytes()) else {
            return Err(MalformedKey::Length {
                actual: input.len(),
            });
        };
        if checksum(&bytes[..CHECKSUM_START]) != bytes[CHECKSUM_START..] {
            return Err(MalformedKey::Checksum);
        }
        Ok(Self { bytes })
    }

    /// The public key id embedded in the key.
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&self.bytes[ID_START..SECRET_START]);
        KeyId::from_checked_bytes(id)
    }

    /// The whole key as bytes: what gets hashed. Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The masked form shown in listings.
    pub fn preview(&self) -> String {
        preview_of(self.as_str())
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this never fails.
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PresentedKey")
            .field(&self.preview())
            .finish()
    }
}

impl fmt::Display for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.preview())
    }
}

/// A freshly generated key: the one moment the plaintext exists, to be returned once to its
/// creator and then dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The key, already in parsed form.
    key: PresentedKey,
}

impl GeneratedKey {
    /// Draws a new key id and secret from the operating system's CSPRNG.
    ///
    /// # Errors
    /// The OS random source failed (practically never; the caller must not fall back to anything
    /// weaker).
    pub fn generate() -> Result<Self, rand::rngs::SysError> {
        let mut bytes = [0u8; KEY_LEN];
        bytes[..ID_START].copy_from_slice(PREFIX.as_bytes());
        base62::fill_random(&mut bytes[ID_START..CHECKSUM_START])?;
        let sum = checksum(&bytes[..CHECKSUM_START]);
        bytes[CHECKSUM_START..].copy_from_slice(&sum);
        Ok(Self {
            key: PresentedKey { bytes },
        })
    }

    /// The key in parsed form (for hashing, the key id and the preview).
    pub fn key(&self) -> &PresentedKey {
        &self.key
    }

    /// The plaintext, for the CreateKey/RotateKey response and nowhere else.
    pub fn into_secret(self) -> String {
        self.key.as_str().to_owned()
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GeneratedKey")
            .field(&self.key.preview())
            .finish()
    }
}

/// The preview of any key-shaped string: `sk-` + the first 4 + `...` + the last 4 characters
/// (after the prefix). Short inputs are fully masked.
pub fn preview_of(key: &str) -> String {
    let body = key.strip_prefix(PREFIX).unwrap_or(key);
    let chars: Vec<char> = body.chars().collect();
    if chars.len() < 12 {
        return format!("{PREFIX}...");
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{PREFIX}{head}...{tail}")
}

/// CRC32 (IEEE) of `data` in base62, most significant digit first, zero-padded to 6.
pub fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    base62::encode_padded(crc32fast::hash(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base62::ALPHABET;

    fn fresh() -> String {
        GeneratedKey::generate()
            .expect("OS random source")
            .into_secret()
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = fresh();
        assert_eq!(key.len(), 53, "{} is not 53 characters", preview_of(&key));
        assert!(key.starts_with("sk-"));
        assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn generated_keys_round_trip_through_parse() {
        for _ in 0..2000 {
            let generated = GeneratedKey::generate().expect("OS random source");
            let text = generated.clone().into_secret();
            let parsed = PresentedKey::parse(&text).expect("a generated key parses");
            assert_eq!(&parsed, generated.key());
            assert_eq!(parsed.key_id().as_str(), &text[3..15]);
            assert_eq!(
                parsed.preview(),
                format!("sk-{}...{}", &text[3..7], &text[49..])
            );
        }
    }

    /// The property that makes the checksum worth having: every single-character substitution,
    /// anywhere in the key and to any other base62 character, is refused. Exhaustive over
    /// positions and replacement characters for a sample of random keys.
    #[test]
    fn any_single_character_change_is_caught() {
        for _ in 0..40 {
            let key = fresh();
            for position in 3..KEY_LEN {
                for &replacement in ALPHABET.iter() {
                    let mut bytes = key.clone().into_bytes();
                    if bytes[position] == replacement {
                        continue;
                    }
                    bytes[position] = replacement;
                    let changed = String::from_utf8(bytes).expect("ASCII");
                    assert_eq!(
                        PresentedKey::parse(&changed),
                        Err(MalformedKey::Checksum),
                        "a change at position {} went unnoticed",
                        position + 1
                    );
                }
            }
        }
    }

    #[test]
    fn swapping_two_adjacent_different_characters_is_caught() {
        for _ in 0..200 {
            let key = fresh().into_bytes();
            for i in 3..KEY_LEN - 1 {
                if key[i] == key[i + 1] {
                    continue;
                }
                let mut swapped = key.clone();
                swapped.swap(i, i + 1);
                let swapped = String::from_utf8(swapped).expect("ASCII");
                assert!(
                    PresentedKey::parse(&swapped).is_err(),
                    "a swap at {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn generated_characters_cover_the_alphabet_evenly() {
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            for b in fresh()[3..47].bytes() {
                let index = ALPHABET.iter().position(|&a| a == b).expect("base62");
                counts[index] += 1;
            }
        }
        // 88 000 draws of the key id and secret (the checksum is not uniform): each character
        // expects ≈1419 (σ ≈ 37; the bounds are 6σ, so a fair generator fails about once in 10⁷ runs);
        // a biased generator (e.g. `% 62` on raw bytes) would push the
        // first 8 characters ≈25 % above the rest.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *min > 1250 && *max < 1600,
            "uneven character counts: min {min}, max {max}"
        );
    }

    #[test]
    fn malformed_keys_get_the_error_naming_what_is_wrong() {
        let good = fresh();
        let mut bad_checksum = good.clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
        let table: Vec<(String, MalformedKey)> = vec![
            (String::new(), MalformedKey::Empty),
            ("pk-".to_owned() + &good[3..], MalformedKey::Prefix),
            ("SK-".to_owned() + &good[3..], MalformedKey::Prefix),
            (good[3..].to_owned(), MalformedKey::Prefix),
            (format!("Bearer {good}"), MalformedKey::Prefix),
            (format!(" {good}"), MalformedKey::Whitespace { position: 1 }),
            (
                format!("{good} "),
                MalformedKey::Whitespace { position: 54 },
            ),
            (
                format!("{good}\n"),
                MalformedKey::Whitespace { position: 54 },
            ),
            (format!("\"{good}\""), MalformedKey::Quoted),
            (format!("'{good}'"), MalformedKey::Quoted),
            (
                format!("{}-{}", &good[..10], &good[11..]),
                MalformedKey::Character { position: 11 },
            ),
            (
                format!("sk-é{}", &good[4..]),
                MalformedKey::Character { position: 4 },
            ),
            (good[..52].to_owned(), MalformedKey::Length { actual: 52 }),
            (format!("{good}A"), MalformedKey::Length { actual: 54 }),
            ("sk-".to_owned(), MalformedKey::Length { actual: 3 }),
            (bad_checksum, MalformedKey::Checksum),
            (format!("sk-{}", "0".repeat(50)), MalformedKey::Checksum),
        ];
        for (input, expected) in table {
            assert_eq!(
                PresentedKey::parse(&input),
                Err(expected),
                "wrong error for {:?}",
                preview_of(&input)
            );
        }
    }

    #[test]
    fn error_messages_never_repeat_the_input() {
        let good = fresh();
        let inputs = [
            format!("{good}x"),
            format!("sk-{}!", &good[3..52]),
            good[..40].to_owned(),
        ];
        for input in inputs {
            let message = PresentedKey::parse(&input).unwrap_err().to_string();
            assert!(
                !message.contains(&input[3..10]),
                "message {message:?} leaks the key"
            );
        }
    }

    #[test]
    fn debug_and_display_show_only_the_preview() {
        let generated = GeneratedKey::generate().expect("OS random source");
        let key = *generated.key();
        let secret = generated.clone().into_secret();
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{generated:?}"),
        ] {
            assert!(!shown.contains(&secret[15..47]), "{shown} shows the secret");
            assert!(shown.contains(&key.preview()), "{shown} lacks the preview");
        }
    }

    #[test]
    fn checksum_is_crc32_in_zero_padded_base62() {
        // crc32("") = 0.
        assert_eq!(&checksum(b""), b"000000");
        // The CRC32 check value: crc32("123456789") = 0xCBF43926 = 3421780262, in base62.
        assert_eq!(&checksum(b"123456789"), b"3jZRME");
    }

    #[test]
    fn preview_masks_short_or_odd_input() {
        assert_eq!(preview_of("sk-1234567890abcdefgh"), "sk-1234...efgh");
        assert_eq!(preview_of("sk-123"), "sk-...");
        assert_eq!(preview_of(""), "sk-...");
    }
}
