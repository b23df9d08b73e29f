//! The key-registry's settings: flags and `STANNA_*` environment variables (clap), or a plain
//! struct in tests via [`Config::for_tests`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Settings of the key-registry service.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "registry_config")]
#[command(next_help_heading = "key-registry")]
pub struct Config {
    /// Where the KeyRegistry gRPC service listens.
    #[arg(
        id = "registry_addr",
        long = "registry-addr",
        env = "STANNA_REGISTRY_ADDR",
        default_value = "127.0.0.1:50051",
        value_parser = stanna_config::listen_addr
    )]
    pub addr: SocketAddr,

    /// Bearer token admins present in the `authorization` metadata (at least 16 characters).
    /// The all-in-one `stanna serve` generates one when unset; a service run alone requires it.
    #[arg(long, env = "STANNA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// A file holding the admin token instead (the container-secret convention, e.g.
    /// `/run/secrets/stanna-admin-token`; a trailing newline is ignored).
    #[arg(long, env = "STANNA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,

    /// A file of named admin tokens, one `name:token` per line (names of 1–64 `a-z0-9_.-`;
    /// blank lines and `#` comments skipped): each admin's changes are audited under their
    /// name. Beside `STANNA_ADMIN_TOKEN` (named `admin`) or instead of it.
    #[arg(long, env = "STANNA_ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<std::path::PathBuf>,

    /// The gateway's own credential (at least 16 characters), given to the registry and to
    /// the gateway alike: it acts only for the API key or session a call names, never as an
    /// admin. The all-in-one `stanna serve` makes one up when unset.
    #[arg(long, env = "STANNA_GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Option<AdminToken>,

    /// A file holding the gateway token instead (a trailing newline is ignored).
    #[arg(long, env = "STANNA_GATEWAY_TOKEN_FILE")]
    pub gateway_token_file: Option<std::path::PathBuf>,

    /// How long audit events are kept, 1d to 3650d; older ones are purged hourly.
    #[arg(long, env = "STANNA_AUDIT_RETENTION", default_value = "90d",
        value_parser = stanna_config::duration_in(
            std::time::Duration::from_secs(86_400),
            std::time::Duration::from_secs(3650 * 86_400)))]
    pub audit_retention: stanna_config::DurationArg,

    /// How long a deleted key's row (its tombstone) is kept, 1d to 3650d; older ones are purged
    /// hourly. Auth-checks see a deletion in their change poll within a second; one cut off from
    /// the store for longer still re-reads every cached key within a minute (docs/auth-check.md).
    #[arg(long, env = "STANNA_TOMBSTONE_RETENTION", default_value = "30d",
        value_parser = stanna_config::duration_in(
            stanna_store::TOMBSTONE_RETENTION_MIN,
            std::time::Duration::from_secs(3650 * 86_400)))]
    pub tombstone_retention: stanna_config::DurationArg,

    /// Named admin tokens read from `STANNA_ADMIN_TOKENS_FILE` (filled by
    /// [`Config::read_token_files`]).
    #[arg(skip)]
    pub admin_tokens: Vec<(String, AdminToken)>,

    /// Keys one user may hold in one workspace (keys past their expiry do not count), 1 to
    /// 100 000.
    #[arg(long, env = "STANNA_MAX_KEYS_PER_USER", default_value_t = 100,
        value_parser = stanna_config::count_in(1u32, 100_000))]
    pub max_keys_per_user: u32,
}

impl Config {
    /// Reads `STANNA_ADMIN_TOKEN_FILE`, `STANNA_ADMIN_TOKENS_FILE` and
    /// `STANNA_GATEWAY_TOKEN_FILE`, when set.
    ///
    /// # Errors
    /// A sentence naming the variable (never a token): a variable and its `_FILE` both set, a
    /// file unreadable, a token refused, a name malformed or given twice, or one token under
    /// two names (the audit log could not tell them apart).
    pub fn read_token_files(&mut self) -> Result<(), String> {
        if let Some(token) = read_token_file(
            "STANNA_ADMIN_TOKEN",
            self.admin_token.is_some(),
            self.admin_token_file.as_deref(),
        )? {
            self.admin_token = Some(token);
        }
        if let Some(token) = read_token_file(
            "STANNA_GATEWAY_TOKEN",
            self.gateway_token.is_some(),
            self.gateway_token_file.as_deref(),
        )? {
            self.gateway_token = Some(token);
        }
        if let Some(path) = &self.admin_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "STANNA_ADMIN_TOKENS_FILE ({}) cannot be read: {e}",
                    path.display()
                )
            })?;
            self.admin_tokens = parse_named_tokens(&text)
                .map_err(|e| format!("STANNA_ADMIN_TOKENS_FILE ({}): {e}", path.display()))?;
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for (name, token) in self.named_admin_tokens() {
            if !names.insert(name.clone()) {
                return Err(format!(
                    "the admin token name {name:?} is given twice (STANNA_ADMIN_TOKEN is named \"admin\")"
                ));
            }
            if !tokens.insert(token.expose().to_owned()) {
                return Err(format!(
                    "the admin token named {name:?} is also another admin's: every admin needs a token of their own"
                ));
            }
        }
        if let Some(gateway) = &self.gateway_token
            && tokens.contains(gateway.expose())
        {
            return Err(
                "STANNA_GATEWAY_TOKEN must differ from every admin token: the gateway must not act as an admin"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Every admin token with its name: `STANNA_ADMIN_TOKEN` as `admin`, then the file's.
    pub fn named_admin_tokens(&self) -> Vec<(String, AdminToken)> {
        self.admin_token
            .iter()
            .map(|t| ("admin".to_owned(), t.clone()))
            .chain(self.admin_tokens.iter().cloned())
            .collect()
    }

    /// Settings for tests: an ephemeral port, `admin_token`, at most 100 keys per user.
    pub fn for_tests(admin_token: &str) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: Some(admin_token.parse().expect("test token is valid")),
            admin_token_file: None,
            admin_tokens_file: None,
            admin_tokens: Vec::new(),
            gateway_token: None,
            gateway_token_file: None,
            audit_retention: stanna_config::DurationArg(std::time::Duration::from_secs(
                90 * 86_400,
            )),
            tombstone_retention: stanna_config::DurationArg(std::time::Duration::from_secs(
                30 * 86_400,
            )),
            max_keys_per_user: 100,
        }
    }
}

/// Reads `VAR_FILE` into a token, refusing it beside `VAR` itself.
fn read_token_file(
    var: &str,
    set_directly: bool,
    path: Option<&std::path::Path>,
) -> Result<Option<AdminToken>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    if set_directly {
        return Err(format!("set {var} or {var}_FILE, not both"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{var}_FILE ({}) cannot be read: {e}", path.display()))?;
    text.trim_end_matches(['\n', '\r'])
        .parse::<AdminToken>()
        .map(Some)
        .map_err(|e| format!("{var}_FILE ({}): {e}", path.display()))
}

/// The longest admin token name.
pub const MAX_ADMIN_NAME: usize = 64;

/// Reads `name:token` lines; blank lines and `#` comments are skipped. Errors name the line,
/// never its token.
///
/// # Errors
/// A malformed line, name or token, or a file naming no token.
pub fn parse_named_tokens(text: &str) -> Result<Vec<(String, AdminToken)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (name, token) = line
            .split_once(':')
            .ok_or_else(|| format!("line {n} is not name:token"))?;
        if name.is_empty()
            || name.len() > MAX_ADMIN_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(format!(
                "line {n}: a name is 1 to {MAX_ADMIN_NAME} of a-z 0-9 _ . -"
            ));
        }
        let token = token
            .parse::<AdminToken>()
            .map_err(|e| format!("line {n} ({name}): {e}"))?;
        out.push((name.to_owned(), token));
    }
    if out.is_empty() {
        return Err("names no token".to_owned());
    }
    Ok(out)
}

/// The admin bearer token. Its `Debug` is redacted so configuration dumps never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The shortest token accepted: a short token is a guessable token.
    pub const MIN_LEN: usize = 16;

    /// The token's bytes, for the constant-time comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() < Self::MIN_LEN {
            return Err(format!(
                "the admin token must be at least {} characters",
                Self::MIN_LEN
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tokens_are_read_line_by_line_and_errors_never_show_a_token() {
        let tokens = parse_named_tokens(
            "# admins\nalice:alice-token-0123456789\n\n bob.ops:bob-token-0123456789abc \n",
        )
        .unwrap();
        let names: Vec<_> = tokens.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alice", "bob.ops"]);
        assert_eq!(tokens[1].1.expose(), "bob-token-0123456789abc");
        for (text, said) in [
            ("alice", "line 1 is not name:token"),
            ("Alice:alice-token-0123456789", "line 1: a name is"),
            (":alice-token-0123456789", "line 1: a name is"),
            (
                "alice:short",
                "line 1 (alice): the admin token must be at least 16",
            ),
            ("# nothing\n", "names no token"),
        ] {
            let err = parse_named_tokens(text).unwrap_err();
            assert!(err.starts_with(said), "{text:?}: {err}");
            assert!(!err.contains("alice-token"), "{err}");
        }
    }

    #[test]
    fn one_token_under_two_names_or_shared_with_the_gateway_is_refused() {
        let mut config = Config::for_tests("alice-token-0123456789");
        config.admin_tokens = parse_named_tokens("bob:alice-token-0123456789").unwrap();
        assert!(
            config
                .read_token_files()
                .unwrap_err()
                .contains("also another admin's")
        );
        let mut config = Config::for_tests("alice-token-0123456789");
        config.admin_tokens = parse_named_tokens("admin:bob-token-0123456789").unwrap();
        assert!(
            config
                .read_token_files()
                .unwrap_err()
                .contains("given twice")
        );
        let mut config = Config::for_tests("alice-token-0123456789");
        config.gateway_token = Some("alice-token-0123456789".parse().unwrap());
        assert!(
            config
                .read_token_files()
                .unwrap_err()
                .contains("must differ")
        );
    }
}
