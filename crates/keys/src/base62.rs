//! Base62 over `0-9A-Za-z`: the alphabet of every key character, drawn uniformly from the OS
//! CSPRNG, and the fixed-width encoding the checksum uses.

use rand::TryRng;
use rand::rngs::SysRng;

/// The base62 alphabet, in digit order: `0` is zero.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `byte` is a base62 character.
pub fn is_digit(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// Fills `out` with uniformly distributed base62 characters from the OS CSPRNG.
///
/// # Errors
/// The OS random source failed (the caller must not fall back to anything weaker).
pub fn fill_random(out: &mut [u8]) -> Result<(), rand::rngs::SysError> {
    let mut pool = [0u8; 64];
    let mut used = pool.len();
    for slot in out.iter_mut() {
        loop {
            if used == pool.len() {
                SysRng.try_fill_bytes(&mut pool)?;
                used = 0;
            }
            let byte = pool[used];
            used += 1;
            // 248 = 4 × 62: rejecting the top 8 values keeps every character equally likely.
            if byte < 248 {
                *slot = ALPHABET[usize::from(byte % 62)];
                break;
            }
        }
    }
    Ok(())
}

/// `value` in base62, most significant digit first, zero-padded to `N` digits (the high digits
/// are dropped if `N` is too small; 6 digits hold any `u32`).
pub fn encode_padded<const N: usize>(mut value: u32) -> [u8; N] {
    let mut out = [ALPHABET[0]; N];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_in_alphabet_order_and_padded() {
        assert_eq!(&encode_padded::<6>(0), b"000000");
        assert_eq!(&encode_padded::<3>(61), b"00z");
        assert_eq!(&encode_padded::<3>(62), b"010");
        assert_eq!(&encode_padded::<6>(u32::MAX), b"4gfFC3");
        assert!(ALPHABET.iter().all(|&b| is_digit(b)));
        assert!(!is_digit(b'-') && !is_digit(b' '));
    }
}
