//! Conversions between `SystemTime` and the stored microseconds since the Unix epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// µs since the epoch; times before 1970 (never produced here) clamp to 0, and times past year
/// 294 247 clamp to `i64::MAX`.
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The inverse of [`to_micros`]; negative values read as the epoch.
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}
