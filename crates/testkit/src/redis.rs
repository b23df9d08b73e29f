//! Redis for tests: the shared server `REDIS_URL` names, or a `redis-server` of the test's own
//! (to stop and restart it, never the shared one).

use crate::dir::TempDir;
use crate::ports::free_port;

/// `REDIS_URL`, or `None` after a loud skip line for `test`.
pub fn redis_url(test: &str) -> Option<String> {
    crate::server_url("REDIS_URL", "Redis", test)
}

/// A `redis-server` of the test's own on a free port (never the shared one), stopped on drop.
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
    /// `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file` when it speaks TLS only.
    tls: Option<[std::path::PathBuf; 3]>,
}

impl OwnRedis {
    /// Starts one, or `None` (after a loud skip) when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None)
    }

    /// Starts one that speaks TLS only (`rediss://`), presenting `cert` / `key`, clients not
    /// asked for certificates; `None` (after a loud skip) without `redis-server`.
    pub fn start_tls(
        test: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Option<Self> {
        Self::start_with(test, Some([cert.to_owned(), key.to_owned(), ca.to_owned()]))
    }

    fn start_with(test: &str, tls: Option<[std::path::PathBuf; 3]>) -> Option<Self> {
        let port = free_port();
        let mut redis = Self {
            port,
            child: None,
            dir: TempDir::new(),
            tls,
        };
        if redis.spawn().is_err() {
            crate::skip(
                test,
                "redis-server is not installed, so this test did not run",
            );
            return None;
        }
        Some(redis)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = std::process::Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some([cert, key, ca]) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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

    /// `redis://127.0.0.1:PORT` (`rediss://` when it speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
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
