//! Service URLs rewritten for tests (a proxy's address, a test's own database), with the `url`
//! crate rather than by hand.

use std::net::{SocketAddr, ToSocketAddrs};

/// `url` with its host and port replaced by `addr` (user, path and query kept).
///
/// # Panics
/// If `url` is not a URL with a host.
pub fn with_host(url: &str, addr: SocketAddr) -> String {
    let mut parsed = url::Url::parse(url).expect("a URL");
    parsed
        .set_ip_host(addr.ip())
        .expect("a URL that has a host");
    parsed
        .set_port(Some(addr.port()))
        .expect("a URL that has a host");
    parsed.to_string()
}

/// `url` with its database (the path) replaced by `name`.
///
/// # Panics
/// If `url` is not a URL.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// The host and port of a `postgres://` URL (5432 unless given), resolved.
///
/// # Panics
/// If `url` has no host or it does not resolve.
pub fn socket_addr_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("a URL");
    let host = parsed.host_str().expect("a host");
    (host, parsed.port().unwrap_or(5432))
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_databases_are_rewritten_and_read() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            with_host("postgres://postgres@127.0.0.1:5432/test", addr),
            "postgres://postgres@127.0.0.1:7000/test"
        );
        assert_eq!(
            with_host("postgres://h/db?x=1", addr),
            "postgres://127.0.0.1:7000/db?x=1"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
        assert_eq!(
            socket_addr_of("postgres://postgres@127.0.0.1:5432/test").port(),
            5432
        );
        assert_eq!(socket_addr_of("postgres://127.0.0.1/test").port(), 5432);
    }
}
