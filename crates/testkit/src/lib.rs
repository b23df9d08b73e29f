//! Helpers shared by the test suites: a temporary directory, a fresh database per test, and a loud
//! skip when a shared server is not configured.
//!
//! Tests find PostgreSQL and Redis through `DATABASE_URL` and `REDIS_URL` (the product itself reads
//! only `STANNA_*` names). Unset — a laptop without those servers — the variants that need them
//! print a `SKIPPED` line and return; `.ci/run` sets both, so in CI they always run.

use std::path::{Path, PathBuf};

use rand::RngExt;
use sea_orm::{ConnectionTrait, Database};

/// A directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    /// The directory's path.
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty directory with a random name.
    ///
    /// # Panics
    /// If the directory cannot be created (a broken test machine).
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("stanna-test-{}", random_suffix()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `sqlite://` URL for a new database file in this directory.
    pub fn sqlite_url(&self) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.path.join("stanna.db").display()
        )
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// 12 random lowercase letters and digits, for unique names.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..12)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

/// A loopback port nobody listens on, for a server the test starts later (often another process).
///
/// A port found by binding port 0 and letting go is not safe: the kernel may hand the same port
/// to the next port-0 bind — a second call here, a child's metrics listener, any outgoing
/// connection — before the server binds it (CI saw two services given one port). So the port is
/// drawn from below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`),
/// where nothing is assigned automatically, is checked free by binding it, and is never handed
/// out twice by this process (another process may draw the same port; the bind check and the
/// width of the range make that unlikely, and a clash fails the start loudly). Where the
/// ephemeral range leaves no room, the kernel's pick is used, with a warning.
///
/// # Panics
/// If no free port is found in 1000 tries (a broken test machine).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let range = reserved_range();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = match &range {
            Some(range) => rng.random_range(range.clone()),
            // No room outside the ephemeral range: fall back to the kernel's pick.
            None => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "WARNING free_port: the kernel's ephemeral port range leaves no room; \
                         ports come from it, and a port-0 bind elsewhere may take one first"
                    );
                });
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_or(0, |a| a.port())
            }
        };
        if port != 0
            && !given.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Ports the kernel never assigns on its own: between 10000 and the start of the ephemeral
/// range, or above its end; `None` when neither leaves 1000 ports.
fn reserved_range() -> Option<std::ops::Range<u16>> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    if low >= 11_000 {
        Some(10_000..low)
    } else if high <= 64_000 {
        Some(high + 1..65_535)
    } else {
        None
    }
}

/// Polls `check` every 50 ms until it holds; panics after `cap`, naming `what`.
///
/// # Panics
/// When `check` still fails after `cap`.
pub async fn eventually<F, Fut>(cap: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < cap,
            "{what} did not happen within {cap:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Prints a line that says loudly which test was skipped and why.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    println!("SKIPPED {test}: {why}");
}

/// `DATABASE_URL`, or `None` after a loud skip line for `test`.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "DATABASE_URL is not set, so the PostgreSQL variant did not run",
            );
            None
        }
    }
}

/// `REDIS_URL`, or `None` after a loud skip line for `test`.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "REDIS_URL is not set, so the Redis variant did not run",
            );
            None
        }
    }
}

/// Creates a new, empty PostgreSQL database next to the one `DATABASE_URL` names and returns its
/// URL, so each test owns its schema; `None` (after a loud skip) when `DATABASE_URL` is unset.
///
/// # Panics
/// If `DATABASE_URL` is set but the server refuses: in CI that is a failure, not a skip.
pub async fn fresh_postgres_database(test: &str) -> Option<String> {
    let admin_url = postgres_url(test)?;
    let name = format!("stanna_test_{}", random_suffix());
    let admin = Database::connect(admin_url.as_str())
        .await
        .expect("connect to DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    admin.close().await.ok();
    Some(replace_database_name(&admin_url, &name))
}

/// Swaps the database name in a `postgres://…/name?params` URL.
fn replace_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{free_port, replace_database_name, reserved_range};

    #[test]
    fn free_ports_are_never_repeated_and_never_ephemeral() {
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        if let Some(range) = reserved_range() {
            assert!(ports.iter().all(|p| range.contains(p)), "{ports:?}");
            // Meanwhile the kernel's own picks land elsewhere.
            let picked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            assert!(!range.contains(&picked.local_addr().unwrap().port()));
        }
    }

    #[test]
    fn database_name_is_replaced_wherever_the_url_puts_it() {
        assert_eq!(
            replace_database_name("postgres://127.0.0.1:5432/test", "x"),
            "postgres://127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database_name("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_database_name("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}

/// A TCP proxy the test owns, between a service and a shared server (PostgreSQL, Redis), so a
/// test can make that server "go away" without touching it: [`TcpProxy::cut`] drops every
/// connection and refuses new ones; [`TcpProxy::restore`] lets them through again.
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`.
    ///
    /// # Panics
    /// If it cannot bind a port.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accepting = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !accepting.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                        _ = cuts.changed() => {},
                    }
                });
            }
        });
        Self {
            addr,
            open,
            cut,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
        // Let the connection tasks see it and close their sockets.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rewrites the host and port of a `scheme://[user@]host:port/…` URL to `addr`.
pub fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!(
        "{}{user}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

/// The `host:port` of a URL, resolved.
pub fn socket_addr_of(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address")
}

/// A `redis-server` of the test's own on a free port (never the shared one), stopped on drop.
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

impl OwnRedis {
    /// Starts one, or `None` (after a loud skip) when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<Self> {
        let port = free_port();
        let mut redis = Self {
            port,
            child: None,
            dir: TempDir::new(),
        };
        if redis.spawn().is_err() {
            skip(
                test,
                "redis-server is not installed, so this test did not run",
            );
            return None;
        }
        Some(redis)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    ///
    /// # Panics
    /// If it cannot start.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart redis-server");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn hosts_are_rewritten_and_read() {
        let addr: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            super::with_host("postgres://postgres@127.0.0.1:5432/test", addr),
            "postgres://postgres@127.0.0.1:7000/test"
        );
        assert_eq!(
            super::with_host("postgres://h/db?x=1", addr),
            "postgres://127.0.0.1:7000/db?x=1"
        );
        assert_eq!(
            super::socket_addr_of("postgres://postgres@127.0.0.1:5432/test").port(),
            5432
        );
    }
}

/// A clock a test moves by hand: `as_clock()` is what services take as their source of "now"
/// (e.g. `stanna_auth_check::Clock`), so expiry and windows are tested without sleeping.
#[derive(Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<std::time::SystemTime>>);

impl ManualClock {
    /// A clock reading the real time now, until moved.
    pub fn new() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            std::time::SystemTime::now(),
        )))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The clock as a shareable function.
    pub fn as_clock(&self) -> std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync> {
        let inner = self.0.clone();
        std::sync::Arc::new(move || *inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A clock that runs with the real one, shifted by what a test adds: time moves on by itself (so
/// keys created one after the other are ordered) and jumps forward on [`ShiftedClock::advance`]
/// (so expiry is tested without sleeping).
#[derive(Clone, Default)]
pub struct ShiftedClock(std::sync::Arc<std::sync::Mutex<std::time::Duration>>);

impl ShiftedClock {
    /// A clock reading the real time until moved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The clock as a shareable function.
    pub fn as_clock(&self) -> std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync> {
        let shift = self.0.clone();
        std::sync::Arc::new(move || {
            std::time::SystemTime::now() + *shift.lock().unwrap_or_else(|p| p.into_inner())
        })
    }
}
