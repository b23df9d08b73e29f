//! The one text form of a duration in settings and limits: a whole number and a unit, `250ms`,
//! `5s`, `2m`, `1h` (as `STANNA_LAST_USED_FLUSH=5s` and the period of `100/60s` are written).

use std::fmt;
use std::time::Duration;

/// The text is not a whole number followed by `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a duration such as 250ms, 5s, 2m or 1h, got {0:?}")]
pub struct DurationSyntax(pub String);

/// Parses `250ms`, `5s`, `2m`, `1h`, `90d` (no spaces, no sign, no fraction).
///
/// # Errors
/// [`DurationSyntax`] for anything else, or a value too large to hold.
pub fn parse_duration(text: &str) -> Result<Duration, DurationSyntax> {
    let bad = || DurationSyntax(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    if split == 0 {
        return Err(bad());
    }
    let amount: u64 = text[..split].parse().map_err(|_| bad())?;
    let millis_per_unit = match &text[split..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = amount.checked_mul(millis_per_unit).ok_or_else(bad)?;
    Ok(Duration::from_millis(millis))
}

/// Writes a duration of whole milliseconds back in the form [`parse_duration`] reads: whole
/// seconds as `60s`, anything else as `1500ms`.
pub struct DurationText(pub Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            " 5s",
            "-1s",
            "1w",
            "1.5s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_print_in_the_form_they_parse() {
        for text in ["60s", "1500ms", "0s", "3600s"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(DurationText(parsed).to_string(), text);
        }
    }
}
