//! The gateway's settings: listener, upstream, deadlines and where the services it calls live.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use stanna_config::DurationArg;

/// Settings of the gateway.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "gateway_config")]
#[command(next_help_heading = "gateway")]
pub struct Config {
    /// The public HTTP listener (HTTP/1.1 and h2c).
    #[arg(
        id = "gateway_addr",
        long = "gateway-addr",
        env = "STANNA_GATEWAY_ADDR",
        default_value = "0.0.0.0:8080",
        value_parser = stanna_config::listen_addr
    )]
    pub addr: SocketAddr,

    /// Where public traffic that is not the key API goes (`http://host:port[/base]`, or
    /// `https://` over TLS); unset: 404.
    #[arg(
        long = "upstream-url",
        visible_alias = "upstream",
        env = "STANNA_UPSTREAM_URL"
    )]
    pub upstream_url: Option<UpstreamUrl>,

    /// A file mapping proxied routes to the scopes a scoped key needs, one `METHOD PATH [SCOPE…]`
    /// per line (README "Scopes"); checked at start. Unset: every proxied route is unmapped, so
    /// only unscoped keys may call the upstream.
    #[arg(long, env = "STANNA_ROUTE_SCOPES", value_parser = route_scopes_file)]
    pub route_scopes: Option<std::sync::Arc<crate::route_scopes::RouteScopes>>,

    /// A Verify slower than this answers 503 `unavailable`, 10ms to 60s.
    #[arg(long, env = "STANNA_VERIFY_TIMEOUT", default_value = "2s",
        value_parser = stanna_config::duration_in(Duration::from_millis(10), Duration::from_secs(60)))]
    pub verify_timeout: DurationArg,

    /// An upstream that has not started answering after this gets 504 `gateway_timeout`, 100ms
    /// to 1h.
    #[arg(long, env = "STANNA_UPSTREAM_TIMEOUT", default_value = "30s",
        value_parser = stanna_config::duration_in(Duration::from_millis(100), Duration::from_secs(3600)))]
    pub upstream_timeout: DurationArg,

    /// The AuthCheck service (`http://host:50052`); unset: the one in this process.
    #[arg(long, env = "STANNA_AUTH_CHECK_URL", value_parser = stanna_config::service_url)]
    pub auth_check_url: Option<String>,

    /// The KeyRegistry service (`http://host:50051`) the REST layer calls; unset: the one in this
    /// process.
    #[arg(long, env = "STANNA_REGISTRY_URL", value_parser = stanna_config::service_url)]
    pub registry_url: Option<String>,

    /// One access-log line per request at `info` (target `stanna::access`): `on` or `off`.
    #[arg(long, env = "STANNA_ACCESS_LOG", value_enum, default_value = "on")]
    pub access_log: Toggle,

    /// A listener of its own for the dashboard and the key API (`host:port`); unset: both are on
    /// the public listener. Set, the public listener neither serves the dashboard nor accepts the
    /// session cookie, so pages of a product sharing the gateway's origin cannot use it.
    #[arg(long, env = "STANNA_DASHBOARD_ADDR", value_parser = stanna_config::listen_addr)]
    pub dashboard_addr: Option<SocketAddr>,

    /// Origins allowed to embed the dashboard in a frame (CSP `frame-ancestors`, e.g.
    /// `https://app.example.com`); unset: none may.
    #[arg(long, env = "STANNA_DASHBOARD_FRAME_ANCESTORS", value_parser = frame_ancestors)]
    pub dashboard_frame_ancestors: Option<String>,

    /// A connection's first bytes, and each HTTP/1 request head from its first byte, must arrive
    /// within this (slow-header clients are closed), 1s to 10min.
    #[arg(long, env = "STANNA_HEADER_TIMEOUT", default_value = "10s",
        value_parser = stanna_config::duration_in(Duration::from_secs(1), Duration::from_secs(600)))]
    pub header_timeout: DurationArg,

    /// A connection with no request in flight this long is closed (HTTP/1 keep-alive and
    /// HTTP/2), 1s to 1h.
    #[arg(long, env = "STANNA_IDLE_TIMEOUT", default_value = "60s",
        value_parser = stanna_config::duration_in(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub idle_timeout: DurationArg,

    /// A request body that sends nothing for this long is cut, 1s to 1h.
    #[arg(long, env = "STANNA_BODY_TIMEOUT", default_value = "30s",
        value_parser = stanna_config::duration_in(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub body_timeout: DurationArg,

    /// The largest request body the gateway forwards (`10MiB`, `512KiB`, `1048576`): past it,
    /// 413. The key API's own bodies are capped at 64 KiB whatever this says.
    #[arg(long, env = "STANNA_MAX_BODY_SIZE", default_value = "10MiB", value_parser = byte_size)]
    pub max_body_size: u64,

    /// Connections open at once on each HTTP listener, 1 to 1 000 000; past it accepting pauses
    /// and the open connections keep working.
    #[arg(long, env = "STANNA_MAX_CONNECTIONS", default_value_t = 10_000,
        value_parser = stanna_config::count_in(1usize, 1_000_000))]
    pub max_connections: usize,

    /// Failed authentications (401) allowed per client address, `LIMIT/PERIOD` or `off`: past it
    /// every request of the address that needs a credential is answered 429 `rate_limited`
    /// without a Verify, so one address cannot flood 401s. IPv6 addresses count per /64.
    #[arg(long, env = "STANNA_UNAUTHENTICATED_RATE_LIMIT", default_value = "100/60s",
        value_parser = unauthenticated_limit)]
    pub unauthenticated_rate_limit: UnauthenticatedLimit,

    /// Certificate chain (PEM) of the gateway's listeners: with STANNA_TLS_KEY_FILE they serve
    /// HTTPS only (HTTP/1.1 and h2 by ALPN). Reloaded on SIGHUP or when the files change.
    #[arg(long, env = "STANNA_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// Private key (PEM) of STANNA_TLS_CERT_FILE.
    #[arg(long, env = "STANNA_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// CA certificate(s) (PEM) an `https://` upstream must be signed by (default: Mozilla's
    /// roots, compiled in).
    #[arg(long, env = "STANNA_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// BENCHMARKS ONLY: forward every request without Verify or quota (a bare proxy), to measure
    /// what authentication costs. Exists only in a build with the `bench-no-auth` cargo feature
    /// (the bench scripts build one); the shipped binary has no such setting and ignores the
    /// variable.
    #[cfg(feature = "bench-no-auth")]
    #[arg(long, env = "STANNA_BENCH_NO_AUTH", hide = true)]
    pub bench_no_auth: bool,
}

impl Config {
    /// Settings for tests: an ephemeral loopback port, no upstream, short deadlines.
    pub fn for_tests() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream_url: None,
            route_scopes: None,
            verify_timeout: DurationArg(Duration::from_secs(2)),
            upstream_timeout: DurationArg(Duration::from_secs(5)),
            auth_check_url: None,
            registry_url: None,
            access_log: Toggle::On,
            dashboard_addr: None,
            dashboard_frame_ancestors: None,
            #[cfg(feature = "bench-no-auth")]
            bench_no_auth: false,
            header_timeout: DurationArg(Duration::from_secs(10)),
            idle_timeout: DurationArg(Duration::from_secs(60)),
            body_timeout: DurationArg(Duration::from_secs(30)),
            max_body_size: 10 * 1024 * 1024,
            max_connections: 10_000,
            unauthenticated_rate_limit: UnauthenticatedLimit(None),
            tls_cert_file: None,
            tls_key_file: None,
            upstream_ca_file: None,
        }
    }

    /// Whether authentication is off (a build with the `bench-no-auth` feature only).
    pub fn bench_no_auth(&self) -> bool {
        #[cfg(feature = "bench-no-auth")]
        return self.bench_no_auth;
        #[cfg(not(feature = "bench-no-auth"))]
        false
    }

    /// The serving limits of these settings.
    pub fn serve_limits(&self) -> crate::serve::ServeLimits {
        crate::serve::ServeLimits {
            header_timeout: self.header_timeout.0,
            idle_timeout: self.idle_timeout.0,
            body_timeout: self.body_timeout.0,
            max_body_bytes: self.max_body_size,
            max_connections: self.max_connections,
        }
    }
}

/// `STANNA_MAX_BODY_SIZE`: bytes, or a number with `KiB`, `MiB` or `GiB`; 1 KiB to 1 GiB.
///
/// # Errors
/// A sentence naming the accepted forms.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown unit {other:?}: write bytes, or a number with KiB, MiB or GiB (10MiB)"
            ));
        }
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!("{text:?} is not a size: write bytes, or a number with KiB, MiB or GiB (10MiB)")
        })?;
    if !(1024..=1024 * 1024 * 1024).contains(&bytes) {
        return Err(format!("{text} is outside 1KiB to 1GiB"));
    }
    Ok(bytes)
}

/// `STANNA_UNAUTHENTICATED_RATE_LIMIT`: `off`, or `LIMIT/PERIOD` as the key limits are written.
///
/// # Errors
/// The window's parse error.
pub fn unauthenticated_limit(text: &str) -> Result<UnauthenticatedLimit, String> {
    if text.trim() == "off" {
        return Ok(UnauthenticatedLimit(None));
    }
    text.parse::<stanna_keys::WindowLimit>()
        .map(|limit| UnauthenticatedLimit(Some(limit)))
        .map_err(|e| format!("{e}; `off` turns the limit off"))
}

/// `STANNA_UNAUTHENTICATED_RATE_LIMIT`: failures allowed per address, `None` when `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnauthenticatedLimit(pub Option<stanna_keys::WindowLimit>);

/// A feature switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
}

/// The upstream's base: `http://authority` plus an optional path prefix that every forwarded
/// path is appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `http`.
    pub(crate) scheme: http::uri::Scheme,
    /// `host:port`.
    pub(crate) authority: http::uri::Authority,
    /// The base path without a trailing `/` (empty for none).
    pub(crate) base_path: String,
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let uri: Uri = value
            .parse()
            .map_err(|e| format!("not a URL ({e}): expected http://host:port[/base]"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or("missing scheme: expected http://")?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!(
                "scheme {scheme} is not supported: expected http:// or https://"
            ));
        }
        let authority = uri.authority().cloned().ok_or("missing host")?;
        if uri.query().is_some() {
            return Err("an upstream URL cannot have a query".into());
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl UpstreamUrl {
    /// The upstream URI for a request to `path_and_query`.
    pub(crate) fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut target = String::with_capacity(self.base_path.len() + path_and_query.len());
        target.push_str(&self.base_path);
        target.push_str(path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
    }
}

/// `STANNA_DASHBOARD_FRAME_ANCESTORS`: space-separated `https://host[:port]` origins (or
/// `'self'`), nothing that could end the CSP directive.
///
/// # Errors
/// A sentence naming what is refused.
pub fn frame_ancestors(text: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        if item == "'self'" {
            out.push(item.to_owned());
            continue;
        }
        let origin = stanna_config::public_url(item)
            .map_err(|e| format!("each entry must be 'self' or an origin: {item:?} {e}"))?;
        out.push(origin.origin);
    }
    if out.is_empty() {
        return Err("must list at least one origin (leave it unset to allow none)".into());
    }
    Ok(out.join(" "))
}

/// Reads and checks `STANNA_ROUTE_SCOPES` while the settings are parsed, so a bad line stops the
/// start with its line number.
fn route_scopes_file(
    path: &str,
) -> Result<std::sync::Arc<crate::route_scopes::RouteScopes>, String> {
    crate::route_scopes::RouteScopes::load(std::path::Path::new(path))
        .map(std::sync::Arc::new)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_join_paths_under_their_base() {
        let plain: UpstreamUrl = "http://127.0.0.1:3000".parse().unwrap();
        assert_eq!(
            plain.join("/a/b?c=1").unwrap().to_string(),
            "http://127.0.0.1:3000/a/b?c=1"
        );
        let based: UpstreamUrl = "http://api.internal:8000/base/".parse().unwrap();
        assert_eq!(
            based.join("/x").unwrap().to_string(),
            "http://api.internal:8000/base/x"
        );
    }

    #[test]
    fn unusable_upstream_urls_are_refused_with_a_reason() {
        for bad in ["", "localhost:3000", "http://a:1/?q=1", "ftp://x"] {
            let err = bad.parse::<UpstreamUrl>().unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
        assert!(
            "https://api.example.com:443/base"
                .parse::<UpstreamUrl>()
                .is_ok()
        );
    }
}
