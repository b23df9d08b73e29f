//! The rate-limit response headers (README, "Calling the public API"), computed from the windows
//! a quota decision returned: GitHub's `X-RateLimit-*` for the binding window plus one pair per window, and the
//! IETF draft's `RateLimit-Policy` and `RateLimit` fields.
//!
//! Pure functions of the windows and the wall clock, so they are unit-tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use stanna_proto::keys::v1 as pb;

use crate::error::whole_seconds_at_least_one;

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const LIMIT_BURST: HeaderName = HeaderName::from_static("x-ratelimit-limit-burst");
const REMAINING_BURST: HeaderName = HeaderName::from_static("x-ratelimit-remaining-burst");
const LIMIT_HOURLY: HeaderName = HeaderName::from_static("x-ratelimit-limit-hourly");
const REMAINING_HOURLY: HeaderName = HeaderName::from_static("x-ratelimit-remaining-hourly");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The window that binds: the one with the least remaining; on a tie, the one that is full again
/// later (so a client waiting for it waits long enough).
pub fn binding_window(windows: &[pb::Window]) -> Option<&pb::Window> {
    windows.iter().min_by(|a, b| {
        a.remaining
            .cmp(&b.remaining)
            .then_with(|| duration(&b.reset_after).cmp(&duration(&a.reset_after)))
    })
}

/// Adds every rate-limit header for `windows` to `headers`; nothing when `windows` is empty (no
/// decision was made: fail-open, or a denial before the quota).
///
/// Every value is written into one buffer and the header values share it (a `Bytes` slice each):
/// one allocation for the nine values where a `HeaderValue` and a `String` apiece took about
/// twenty — this runs on every allowed request.
pub fn insert(headers: &mut HeaderMap, windows: &[pb::Window], now: SystemTime) {
    let Some(binding) = binding_window(windows) else {
        return;
    };
    let reset_after = duration(&binding.reset_after);
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Unix seconds when the binding window is full again, rounded up.
    let reset_at = now + reset_after;
    let reset_at = reset_at.as_secs() + u64::from(reset_at.subsec_nanos() > 0);

    let mut values = Values::new();
    values.number(LIMIT, binding.limit);
    values.number(REMAINING, binding.remaining);
    values.number(RESET, reset_at);
    for window in windows {
        match window.name.as_str() {
            "burst" => {
                values.number(LIMIT_BURST, window.limit);
                values.number(REMAINING_BURST, window.remaining);
            }
            "hourly" => {
                values.number(LIMIT_HOURLY, window.limit);
                values.number(REMAINING_HOURLY, window.remaining);
            }
            other => insert_custom_window(headers, other, window),
        }
    }
    // RateLimit-Policy: `"burst";q=100;w=60, "hourly";q=1000;w=3600`.
    let start = values.start();
    for (i, window) in windows.iter().enumerate() {
        if i > 0 {
            values.text(", ");
        }
        values.text("\"");
        values.text(&window.name);
        values.text("\";q=");
        values.digits(window.limit);
        values.text(";w=");
        values.digits(duration(&window.period).as_secs());
    }
    values.end(POLICY, start);
    // RateLimit: `"burst";r=99;t=60` for the binding window.
    let start = values.start();
    values.text("\"");
    values.text(&binding.name);
    values.text("\";r=");
    values.digits(binding.remaining);
    values.text(";t=");
    values.digits(if reset_after.is_zero() {
        0
    } else {
        whole_seconds_at_least_one(reset_after)
    });
    values.end(RATELIMIT, start);
    values.insert_into(headers);
}

/// Header values written one after another into one buffer.
struct Values {
    buf: BytesMut,
    fields: Vec<(HeaderName, std::ops::Range<usize>)>,
}

impl Values {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(256),
            fields: Vec::with_capacity(9),
        }
    }

    /// A header whose value is one number.
    fn number(&mut self, name: HeaderName, n: impl itoa::Integer) {
        let start = self.start();
        self.digits(n);
        self.end(name, start);
    }

    fn start(&self) -> usize {
        self.buf.len()
    }

    fn text(&mut self, text: &str) {
        self.buf.extend_from_slice(text.as_bytes());
    }

    fn digits(&mut self, n: impl itoa::Integer) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Ends the value of `name` begun at `start`.
    fn end(&mut self, name: HeaderName, start: usize) {
        self.fields.push((name, start..self.buf.len()));
    }

    fn insert_into(self, headers: &mut HeaderMap) {
        headers.reserve(self.fields.len());
        let buf = self.buf.freeze();
        for (name, range) in self.fields {
            // A window name that is not a valid header value is left out, not sent broken.
            if let Ok(value) = HeaderValue::from_maybe_shared(buf.slice(range)) {
                headers.insert(name, value);
            }
        }
    }
}

/// Headers for a window that is neither `burst` nor `hourly` (not made today: every key has
/// exactly those two; kept so a future window name is reported rather than dropped).
fn insert_custom_window(headers: &mut HeaderMap, name: &str, window: &pb::Window) {
    // Header names are lowercase; anything but a letter or digit becomes '-'.
    let suffix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if let (Ok(limit), Ok(remaining)) = (
        HeaderName::try_from(format!("x-ratelimit-limit-{suffix}")),
        HeaderName::try_from(format!("x-ratelimit-remaining-{suffix}")),
    ) {
        headers.insert(limit, HeaderValue::from(window.limit));
        headers.insert(remaining, HeaderValue::from(window.remaining));
    }
}

/// A proto duration as a std one (absent or negative: zero).
pub fn duration(d: &Option<prost_types::Duration>) -> Duration {
    d.and_then(stanna_proto::convert::std_duration)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(name: &str, limit: u32, remaining: u32, reset_ms: u64, period_s: u64) -> pb::Window {
        pb::Window {
            name: name.into(),
            limit,
            remaining,
            reset_after: prost_types::Duration::try_from(Duration::from_millis(reset_ms)).ok(),
            period: prost_types::Duration::try_from(Duration::from_secs(period_s)).ok(),
        }
    }

    fn headers_for(windows: &[pb::Window]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        insert(&mut headers, windows, now);
        headers
    }

    #[test]
    fn the_binding_window_is_the_one_with_least_remaining() {
        let h = headers_for(&[
            window("burst", 100, 57, 22_100, 60),
            window("hourly", 1000, 943, 3_500_000, 3600),
        ]);
        assert_eq!(h["x-ratelimit-limit"], "100");
        assert_eq!(h["x-ratelimit-remaining"], "57");
        // 1_700_000_000.25 s + 22.1 s = 1_700_000_022.35 s, rounded up.
        assert_eq!(h["x-ratelimit-reset"], "1700000023");
        assert_eq!(h["x-ratelimit-limit-burst"], "100");
        assert_eq!(h["x-ratelimit-remaining-burst"], "57");
        assert_eq!(h["x-ratelimit-limit-hourly"], "1000");
        assert_eq!(h["x-ratelimit-remaining-hourly"], "943");
        assert_eq!(
            h["ratelimit-policy"],
            "\"burst\";q=100;w=60, \"hourly\";q=1000;w=3600"
        );
        assert_eq!(h["ratelimit"], "\"burst\";r=57;t=23");
    }

    #[test]
    fn the_hourly_window_binds_when_it_has_less_left() {
        let h = headers_for(&[
            window("burst", 100, 40, 1_000, 60),
            window("hourly", 1000, 12, 1_800_000, 3600),
        ]);
        assert_eq!(h["x-ratelimit-limit"], "1000");
        assert_eq!(h["x-ratelimit-remaining"], "12");
        assert_eq!(h["ratelimit"], "\"hourly\";r=12;t=1800");
    }

    #[test]
    fn on_a_tie_the_window_full_again_later_binds() {
        let h = headers_for(&[
            window("burst", 100, 0, 30_000, 60),
            window("hourly", 1000, 0, 900_000, 3600),
        ]);
        assert_eq!(h["ratelimit"], "\"hourly\";r=0;t=900");
    }

    #[test]
    fn an_untouched_window_resets_now() {
        let h = headers_for(&[
            window("burst", 100, 100, 0, 60),
            window("hourly", 1000, 1000, 0, 3600),
        ]);
        assert_eq!(h["x-ratelimit-reset"], "1700000001");
        assert_eq!(h["ratelimit"], "\"burst\";r=100;t=0");
    }

    #[test]
    fn no_windows_means_no_headers() {
        assert!(headers_for(&[]).is_empty());
    }

    #[test]
    fn another_window_name_gets_its_own_pair() {
        let h = headers_for(&[window("per-day", 5, 4, 10, 86_400)]);
        assert_eq!(h["x-ratelimit-limit-per-day"], "5");
        assert_eq!(h["x-ratelimit-remaining-per-day"], "4");
    }
}
