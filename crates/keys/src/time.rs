//! Time as every service takes it: an injected [`Clock`] (so tests move time by hand) and the one
//! conversion to and from counts since the Unix epoch.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", injected so tests control time (`stanna_testkit::ManualClock`).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Microseconds since the epoch; times before 1970 (never produced here) are 0, times past year
/// 294 247 saturate.
pub fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds since the epoch, saturating like [`micros_since_epoch`].
pub fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `micros` microseconds after the epoch.
pub fn from_micros_since_epoch(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

/// `t` in RFC 3339 at whole seconds, UTC (`2026-12-02T15:04:05Z`), for messages a person reads.
/// A time past what chrono represents (year 262 143) is written as seconds since the epoch
/// rather than panicking.
pub fn rfc3339(t: SystemTime) -> String {
    let seconds = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match chrono::DateTime::<chrono::Utc>::from_timestamp(seconds, 0) {
        Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("{seconds} s after 1970-01-01T00:00:00Z"),
    }
}

/// `t` in RFC 3339, UTC, to the microsecond (`2025-12-02T15:04:05.123456Z`): what an audit
/// record shows, so two times within one second still differ.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let micros = i64::try_from(micros_since_epoch(t)).unwrap_or(i64::MAX);
    match chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros) {
        Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        None => format!("{micros} µs after 1970-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_counts_round_trip_and_clamp_before_1970() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_220_000_123_456);
        assert_eq!(from_micros_since_epoch(micros_since_epoch(t)), t);
        assert_eq!(millis_since_epoch(t), 1_764_220_000_123);
        assert_eq!(micros_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn rfc3339_is_utc_at_whole_seconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_687_845_999_999);
        assert_eq!(rfc3339(t), "2025-12-02T15:04:05Z");
        let far = UNIX_EPOCH + Duration::from_micros(u64::MAX);
        assert!(rfc3339(far).ends_with("s after 1970-01-01T00:00:00Z"));
    }
}
