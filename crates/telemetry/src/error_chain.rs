//! One way to log an error: with its whole source chain, so a log line says *why* ("database
//! unavailable: pool timed out while waiting for an open connection: connection refused"), not
//! just what failed.

use std::fmt;

/// Displays an error and every source below it, joined by `": "`. A source whose text its parent
/// already shows (wrappers often repeat their cause) is not repeated.
///
/// ```
/// # use stanna_telemetry::ErrorChain;
/// let io = std::io::Error::other("connection refused");
/// let err = std::io::Error::new(std::io::ErrorKind::Other, io);
/// assert_eq!(ErrorChain(&err).to_string(), "connection refused");
/// ```
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database unavailable")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("pool timed out: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_named_once() {
        let err = Outer(Middle(std::io::Error::other("connection refused")));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "database unavailable: pool timed out: connection refused"
        );
    }
}
