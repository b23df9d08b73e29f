//! The value parsers of every setting, so a value that cannot work is refused when the process
//! starts, with the allowed range or form — never later with a panic or a silent fallback. clap
//! calls them for flags and `STANNA_*` variables alike; `stanna`'s command line names the variable
//! that was set in the error (`services/stanna/src/cli.rs`). No parser repeats a secret.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use stanna_keys::DurationText;

/// A duration written as a number and a unit: `250ms`, `5s`, `2m`, `1h` (the one parser,
/// [`stanna_keys::parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = stanna_keys::DurationSyntax;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        stanna_keys::parse_duration(value).map(Self)
    }
}

/// A parser for a duration from `min` to `max` (both included).
pub fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<DurationArg, String> + Clone + Send + Sync + 'static {
    move |text| {
        let bad = || {
            format!(
                "must be a duration from {} to {} such as 250ms, 5s or 2m, got {text:?}",
                DurationText(min),
                DurationText(max)
            )
        };
        let parsed = stanna_keys::parse_duration(text).map_err(|_| bad())?;
        if parsed < min || parsed > max {
            return Err(bad());
        }
        Ok(DurationArg(parsed))
    }
}

/// A parser for a whole number from `min` to `max` (both included).
pub fn count_in<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display + Send + Sync + 'static,
{
    move |text| {
        let bad = || format!("must be a whole number from {min} to {max}, got {text:?}");
        let parsed: T = text.trim().parse().map_err(|_| bad())?;
        if parsed < min || parsed > max {
            return Err(bad());
        }
        Ok(parsed)
    }
}

/// `host:port` to listen on (`0.0.0.0:8080`, `[::1]:50051`, `localhost:8080`); a host name is
/// resolved once, here.
///
/// # Errors
/// A message naming the expected form.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let bad =
        || format!("must be host:port such as 127.0.0.1:8080 or localhost:8080, got {text:?}");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// The URL of another Stanna service (`http://host:port`): the scheme, a host and a port are
/// required, and nothing else.
///
/// # Errors
/// A message saying what is missing or not supported.
pub fn service_url(text: &str) -> Result<String, String> {
    let example = "such as http://127.0.0.1:50052";
    if !text.contains("://") {
        return Err(format!("needs a scheme: write http://{text}"));
    }
    let url =
        url::Url::parse(text).map_err(|_| format!("must be a URL {example}, got {text:?}"))?;
    match url.scheme() {
        // https: TLS, trusting STANNA_GRPC_CA_FILE (or the system's roots).
        "http" | "https" => {}
        other => {
            return Err(format!(
                "the scheme {other}:// is not supported: use http:// or https://, {example}"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("names no host: use a URL {example}"));
    }
    if url.port().is_none() {
        return Err(format!("names no port: use a URL {example}"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!("must be only a scheme, host and port, {example}"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The key store: `sqlite://path` (the file is created unless the URL says `mode=`) or
/// `postgres://…` (`postgresql://` too). Never repeats the URL, which may hold a password.
///
/// # Errors
/// A message naming the forms accepted.
pub fn database_url(text: &str) -> Result<String, String> {
    let forms = "sqlite://stanna.db or postgres://user@host:5432/db";
    let scheme = text.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("sqlite") if text.len() > "sqlite://".len() => Ok(text.to_owned()),
        Some("postgres" | "postgresql") => url::Url::parse(text)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
            .map(|_| text.to_owned())
            .ok_or_else(|| {
                "is not a PostgreSQL URL such as postgres://user@host:5432/db".to_owned()
            }),
        _ => Err(format!("must be {forms}")),
    }
}

/// A PostgreSQL streaming replica to read from: `postgres://…` only (SQLite has no replicas).
/// Never repeats the URL.
///
/// # Errors
/// A message naming the form accepted.
pub fn replica_url(text: &str) -> Result<String, String> {
    match database_url(text) {
        Ok(url) if !url.starts_with("sqlite") => Ok(url),
        _ => Err("must be a PostgreSQL streaming replica's URL such as postgres://user@replica:5432/db (SQLite has no replicas)".to_owned()),
    }
}

/// Redis for shared limits: `redis://[:password@]host:port[/db]`, or a Redis Cluster's seed
/// nodes as a comma-separated list of such URLs (one scheme, the same credentials, no database:
/// a cluster has only database 0). A comma means a cluster, so one seed — a managed cluster's
/// configuration endpoint — is written with a trailing comma (`redis://cfg.example:6379,`), and
/// a comma inside a password is written `%2C`.
/// Never repeats the URL.
///
/// # Errors
/// A message naming the form accepted (and, for a list, which entry is at fault).
pub fn redis_url(text: &str) -> Result<String, String> {
    let form = "redis://host:6379 (or redis://:password@host:6379/db, rediss:// for TLS, or a Redis Cluster's nodes as redis://host1:6379,redis://host2:6379)";
    let text = text.trim();
    if !text.contains(',') {
        one_redis_url(text, form)?;
        return Ok(text.to_owned());
    }
    let listed = text.strip_suffix(',').unwrap_or(text).trim_end();
    let seeds: Vec<&str> = listed.split(',').map(str::trim).collect();
    let mut first: Option<url::Url> = None;
    for (i, seed) in seeds.iter().enumerate() {
        let n = i + 1;
        if seed.is_empty() {
            return Err(format!(
                "seed {n} of the Redis Cluster list is empty: use {form}"
            ));
        }
        let url = one_redis_url(seed, form).map_err(|e| format!("seed {n}: {e}"))?;
        if !matches!(url.path().trim_start_matches('/'), "" | "0") {
            return Err(format!(
                "seed {n}: a Redis Cluster has only database 0, so a seed names no database"
            ));
        }
        if let Some(first) = &first {
            if first.scheme() != url.scheme() {
                return Err(format!(
                    "seed {n}: every seed of a Redis Cluster uses the same scheme (redis:// or rediss://)"
                ));
            }
            if (first.username(), first.password()) != (url.username(), url.password()) {
                return Err(format!(
                    "seed {n}: every seed of a Redis Cluster carries the same user and password"
                ));
            }
        } else {
            first = Some(url);
        }
    }
    let mut list = seeds.join(",");
    if seeds.len() == 1 {
        // Still a cluster: keep the comma that says so.
        list.push(',');
    }
    Ok(list)
}

fn one_redis_url(text: &str, form: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|_| format!("must be {form}"))?;
    match url.scheme() {
        // rediss: TLS, trusting STANNA_REDIS_CA_FILE (or the system's roots).
        "redis" | "rediss" => {}
        _ => {
            return Err(format!("must be {form}"));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("names no host: use {form}"));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "the database after the host must be a number: use {form}"
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_against_their_range() {
        let poll = duration_in(Duration::from_millis(10), Duration::from_secs(30));
        assert_eq!(poll("250ms"), Ok(DurationArg(Duration::from_millis(250))));
        let refused = poll("0s").unwrap_err();
        assert!(refused.contains("from 10ms to 30s"), "{refused}");
        assert!(poll("31s").is_err());
        assert!(poll("soon").is_err());
    }

    #[test]
    fn counts_are_checked_against_their_range() {
        let max_keys = count_in(1u32, 100_000);
        assert_eq!(max_keys("100"), Ok(100));
        assert!(max_keys("0").unwrap_err().contains("from 1 to 100000"));
        assert!(max_keys("-1").is_err());
        assert!(max_keys("lots").is_err());
    }

    #[test]
    fn listen_addresses_take_host_names() {
        assert_eq!(
            listen_addr("127.0.0.1:8080"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(listen_addr("localhost:8080").unwrap().port(), 8080);
        for bad in ["8080", "localhost", ":8080", "127.0.0.1:http", "a b:1"] {
            assert!(listen_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn service_urls_need_http_a_host_and_a_port() {
        assert_eq!(
            service_url("http://127.0.0.1:50052"),
            Ok("http://127.0.0.1:50052".to_owned())
        );
        assert_eq!(
            service_url("http://auth-check:50052/"),
            Ok("http://auth-check:50052".to_owned())
        );
        assert_eq!(
            service_url("https://auth-check:50052"),
            Ok("https://auth-check:50052".to_owned())
        );
        for (bad, says) in [
            ("127.0.0.1:50052", "scheme"),
            ("ftp://h:1", "ftp"),
            ("http://h", "port"),
            ("http://h:1/path", "only"),
        ] {
            let message = service_url(bad).unwrap_err();
            assert!(message.contains(says), "{bad}: {message}");
        }
    }

    #[test]
    fn store_and_redis_urls_are_checked_without_repeating_them() {
        assert!(database_url("sqlite://stanna.db").is_ok());
        assert!(database_url("postgres://u:pw@h:5432/db").is_ok());
        assert!(replica_url("postgres://u:pw@replica:5432/db").is_ok());
        let refused = replica_url("sqlite://stanna.db").unwrap_err();
        assert!(refused.contains("SQLite has no replicas"), "{refused}");
        assert!(
            !replica_url("postgres://u:secret-pw@/db")
                .unwrap_err()
                .contains("secret-pw")
        );
        let refused = database_url("mysql://u:secret-pw@h/db").unwrap_err();
        assert!(!refused.contains("secret-pw"), "{refused}");
        assert!(redis_url("redis://:pw@h:6379/2").is_ok());
        let refused = redis_url("http://:secret-pw@h").unwrap_err();
        assert!(!refused.contains("secret-pw"), "{refused}");
        assert!(redis_url("rediss://h:6379").is_ok());
        assert!(redis_url("redis://h:6379/x").is_err());
        // A Redis Cluster: seeds, comma-separated; one seed keeps its trailing comma.
        assert_eq!(
            redis_url("redis://a:7000, redis://b:7001"),
            Ok("redis://a:7000,redis://b:7001".to_owned())
        );
        assert_eq!(
            redis_url("rediss://cfg:6379,"),
            Ok("rediss://cfg:6379,".to_owned())
        );
        let db = redis_url("redis://a:7000,redis://b:7001/2").unwrap_err();
        assert!(
            db.starts_with("seed 2: a Redis Cluster has only database 0"),
            "{db}"
        );
        let empty = redis_url("redis://a:7000,,redis://b:7001").unwrap_err();
        assert!(
            empty.contains("seed 2 of the Redis Cluster list is empty"),
            "{empty}"
        );
        let mixed = redis_url("redis://a:7000,rediss://b:7001").unwrap_err();
        assert!(mixed.contains("same scheme"), "{mixed}");
        let secret = redis_url("redis://:pw1@a:7000,redis://:other-secret@b:7001").unwrap_err();
        assert!(secret.contains("same user and password"), "{secret}");
        assert!(
            !secret.contains("pw1") && !secret.contains("other-secret"),
            "{secret}"
        );
        let bad = redis_url("redis://a:7000,http://b").unwrap_err();
        assert!(bad.starts_with("seed 2: must be"), "{bad}");
    }
}
