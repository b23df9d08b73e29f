//! Dashboard sign-in settings, shared by the registry (which verifies login tokens and creates
//! sessions), the gateway (which shows who a sign-in link is for, sets the cookie and checks
//! `Origin` against the public URL) and `stanna session-link`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use stanna_keys::Clock;
use stanna_keys::login::{DEFAULT_AUDIENCE, LoginVerifier, MIN_SECRET_LEN};

use crate::{DurationArg, duration_in};

/// Sign-in settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "session_config")]
#[command(next_help_heading = "dashboard sign-in")]
pub struct SessionConfig {
    /// HS256 secret the product signs login tokens with (at least 32 bytes). The all-in-one
    /// `stanna serve` generates one in STANNA_STATE_DIR when neither this, its _FILE nor
    /// STANNA_SESSION_JWKS_FILE is set; a registry or gateway run alone requires one.
    #[arg(long, env = "STANNA_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<SessionSecret>,

    /// A file holding the HS256 secret (trailing newline ignored), instead of the variable.
    #[arg(long, env = "STANNA_SESSION_SECRET_FILE")]
    pub session_secret_file: Option<PathBuf>,

    /// A JWK set (JSON) of the product's public keys — Ed25519, ES256 or RS256, chosen by `kid`,
    /// several for rotation — instead of a shared secret.
    #[arg(long, env = "STANNA_SESSION_JWKS_FILE")]
    pub session_jwks_file: Option<PathBuf>,

    /// The `aud` every login token must carry.
    #[arg(long, env = "STANNA_SESSION_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub session_audience: String,

    /// When set, the `iss` every login token must carry.
    #[arg(long, env = "STANNA_SESSION_ISSUER")]
    pub session_issuer: Option<String>,

    /// How long a dashboard session lasts, 5m to 7d.
    #[arg(long, env = "STANNA_SESSION_TTL", default_value = "12h",
        value_parser = duration_in(Duration::from_secs(300), Duration::from_secs(7 * 24 * 3600)))]
    pub session_ttl: DurationArg,

    /// The address browsers use to reach the dashboard (`http[s]://host[:port]`, no path): sign-in
    /// links, the `Origin` check and the cookie's `Secure` / `__Host-` follow it. Forwarded
    /// headers are never trusted for it.
    #[arg(long, env = "STANNA_PUBLIC_URL", default_value = "http://localhost:8080",
        value_parser = public_url)]
    pub public_url: PublicUrl,

    /// Where the all-in-one `stanna serve` keeps what it generates (admin token, session
    /// secret), in owner-only files reused across restarts.
    #[arg(long, env = "STANNA_STATE_DIR", default_value = ".")]
    pub state_dir: PathBuf,
}

impl SessionConfig {
    /// Settings for tests: the HS256 `secret`, the default audience, 12 h sessions, the default
    /// public URL.
    pub fn for_tests(secret: &str) -> Self {
        Self {
            session_secret: Some(secret.parse().expect("a test secret of 32+ bytes")),
            session_secret_file: None,
            session_jwks_file: None,
            session_audience: DEFAULT_AUDIENCE.to_owned(),
            session_issuer: None,
            session_ttl: DurationArg(Duration::from_secs(12 * 3600)),
            public_url: public_url("http://localhost:8080").expect("valid"),
            state_dir: PathBuf::from("."),
        }
    }

    /// Whether any way of verifying login tokens is set.
    pub fn is_configured(&self) -> bool {
        self.session_secret.is_some()
            || self.session_secret_file.is_some()
            || self.session_jwks_file.is_some()
    }

    /// The login-token verifier these settings describe; `None` when none is set.
    ///
    /// # Errors
    /// A sentence naming the variable: both a secret and a key set, a file that cannot be read,
    /// a short secret, a key set that does not parse.
    pub fn login_verifier(&self, clock: Clock) -> Result<Option<LoginVerifier>, String> {
        let secret = match (&self.session_secret, &self.session_secret_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "set STANNA_SESSION_SECRET or STANNA_SESSION_SECRET_FILE, not both".to_owned(),
                );
            }
            (Some(secret), None) => Some(secret.0.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "STANNA_SESSION_SECRET_FILE ({}) cannot be read: {e}",
                        path.display()
                    )
                })?;
                let secret = text.trim_end_matches(['\n', '\r']).to_owned();
                if secret.len() < MIN_SECRET_LEN {
                    return Err(format!(
                        "STANNA_SESSION_SECRET_FILE ({}) must hold at least {MIN_SECRET_LEN} bytes",
                        path.display()
                    ));
                }
                Some(secret)
            }
            (None, None) => None,
        };
        let issuer = self.session_issuer.as_deref();
        let audience = &self.session_audience;
        match (secret, &self.session_jwks_file) {
            (Some(_), Some(_)) => Err(
                "set a session secret (STANNA_SESSION_SECRET or _FILE) or STANNA_SESSION_JWKS_FILE, not both: a token must have one way to verify"
                    .to_owned(),
            ),
            (Some(secret), None) => {
                LoginVerifier::with_secret(secret.as_bytes(), audience, issuer, clock)
                    .map(Some)
                    .map_err(|e| format!("STANNA_SESSION_SECRET {e}"))
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("STANNA_SESSION_JWKS_FILE ({}) cannot be read: {e}", path.display())
                })?;
                LoginVerifier::with_jwks(&text, audience, issuer, clock)
                    .map(Some)
                    .map_err(|e| format!("STANNA_SESSION_JWKS_FILE ({}) {e}", path.display()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The HS256 secret. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret(String);

impl SessionSecret {
    /// The secret's bytes (for signing in `stanna session-link` and tests).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionSecret {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the session secret must be at least {MIN_SECRET_LEN} bytes"
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// The dashboard's public origin: scheme, host and port, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `http://localhost:8080` (no trailing slash): what a browser sends as `Origin`.
    pub origin: String,
    /// Whether it is https (the cookie is then `Secure` with the `__Host-` prefix).
    pub https: bool,
}

/// Parses `STANNA_PUBLIC_URL`.
///
/// # Errors
/// Anything but `http://` or `https://` with a host and no path, query or user info.
pub fn public_url(text: &str) -> Result<PublicUrl, String> {
    let bad = |why: &str| format!("must be http[s]://host[:port] with no path: {why}");
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(bad(&format!("the scheme is {other}"))),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it holds a user name or password"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it holds a path, query or fragment"));
    }
    Ok(PublicUrl {
        origin: url.origin().ascii_serialization(),
        https,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_origins() {
        let url = public_url("https://keys.example.com/").unwrap();
        assert_eq!(url.origin, "https://keys.example.com");
        assert!(url.https);
        assert_eq!(
            public_url("http://localhost:8080").unwrap().origin,
            "http://localhost:8080"
        );
        for bad in [
            "ftp://x",
            "http://x/path",
            "http://u:p@x",
            "localhost:8080",
            "http://x?q",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_and_key_set_together_are_refused() {
        let mut config = SessionConfig::for_tests("0123456789abcdef0123456789abcdef");
        config.session_jwks_file = Some(PathBuf::from("/nonexistent"));
        let error = config
            .login_verifier(stanna_keys::system_clock())
            .unwrap_err();
        assert!(error.contains("not both"), "{error}");
        assert!(!error.contains("0123456789abcdef"), "{error}");
        assert!("short".parse::<SessionSecret>().is_err());
    }
}
