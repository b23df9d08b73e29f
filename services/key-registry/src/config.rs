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

    /// Keys one user may hold in one workspace (keys past their expiry do not count), 1 to
    /// 100 000.
    #[arg(long, env = "STANNA_MAX_KEYS_PER_USER", default_value_t = 100,
        value_parser = stanna_config::count_in(1u32, 100_000))]
    pub max_keys_per_user: u32,
}

impl Config {
    /// Reads `STANNA_ADMIN_TOKEN_FILE` into the admin token, when it is set.
    ///
    /// # Errors
    /// A sentence naming the variable (never the token): both variables set, the file unreadable,
    /// or its token refused.
    pub fn read_admin_token_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.admin_token_file else {
            return Ok(());
        };
        if self.admin_token.is_some() {
            return Err("set STANNA_ADMIN_TOKEN or STANNA_ADMIN_TOKEN_FILE, not both".to_owned());
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "STANNA_ADMIN_TOKEN_FILE ({}) cannot be read: {e}",
                path.display()
            )
        })?;
        let token = text
            .trim_end_matches(['\n', '\r'])
            .parse::<AdminToken>()
            .map_err(|e| format!("STANNA_ADMIN_TOKEN_FILE ({}): {e}", path.display()))?;
        self.admin_token = Some(token);
        Ok(())
    }

    /// Settings for tests: an ephemeral port, `admin_token`, at most 100 keys per user.
    pub fn for_tests(admin_token: &str) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: Some(admin_token.parse().expect("test token is valid")),
            admin_token_file: None,
            max_keys_per_user: 100,
        }
    }
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
