//! The stored form of times: microseconds since the Unix epoch in a signed 64-bit column (exact,
//! ordered alike on SQLite and PostgreSQL), through the one epoch conversion in `stanna_keys`.

use std::time::SystemTime;

use stanna_keys::time::{from_micros_since_epoch, micros_since_epoch};

/// µs since the epoch as stored; times past year 294 247 clamp to `i64::MAX`.
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    i64::try_from(micros_since_epoch(t)).unwrap_or(i64::MAX)
}

/// The inverse of [`to_micros`]; negative values read as the epoch.
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    from_micros_since_epoch(u64::try_from(micros).unwrap_or(0))
}
