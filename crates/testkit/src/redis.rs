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

/// A Redis Cluster of the test's own: three masters and three replicas, each a `redis-server
/// --cluster-enabled yes` on free ports (data and bus port both drawn, never `port + 10000`,
/// which may fall in the kernel's ephemeral range), joined by `redis-cli --cluster create`, with
/// a one-second `cluster-node-timeout` so a killed master's replica takes over within seconds.
/// Every node is stopped and its directory removed on drop.
pub struct OwnRedisCluster {
    nodes: Vec<ClusterNode>,
    _dir: TempDir,
}

struct ClusterNode {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedisCluster {
    /// Starts one and waits until every node reports `cluster_state:ok`; `None` (after a loud
    /// skip) when `redis-server` or `redis-cli` is not installed.
    ///
    /// # Panics
    /// If the cluster does not form within 30 s.
    pub fn start(test: &str) -> Option<Self> {
        let installed = |program: &str| {
            std::process::Command::new(program)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !installed("redis-server") || !installed("redis-cli") {
            crate::skip(
                test,
                "redis-server and redis-cli are needed for a Redis Cluster, so this test did not run",
            );
            return None;
        }
        let dir = TempDir::new();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-node-timeout", "1000"])
                // Replicas sync at once, not after the 5 s a diskless sync waits by default for
                // more replicas to share one transfer.
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start redis-server");
            nodes.push(ClusterNode {
                port,
                child: Some(child),
            });
        }
        let cluster = Self { nodes, _dir: dir };
        for node in &cluster.nodes {
            wait_for_port(node.port);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let ports = cluster.ports();
        cluster.wait_until("every node sees the cluster ok", 30, || {
            ports
                .iter()
                .all(|&p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && cluster.masters().len() == 3
        });
        // A replica that has not finished its first sync refuses to take over ("disconnected
        // from master for longer than allowed"): wait for every replica's link.
        cluster.wait_until("every replica is in sync with its master", 30, || {
            ports
                .iter()
                .map(|&p| cli(p, &["INFO", "replication"]))
                .filter(|info| info.contains("role:slave"))
                .filter(|info| info.contains("master_link_status:up"))
                .count()
                == 3
        });
        Some(cluster)
    }

    /// The seed list `STANNA_REDIS_URL` takes: every node, `redis://127.0.0.1:P,redis://…`.
    pub fn seeds(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's port, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the live masters that own slots, as the live nodes see them.
    pub fn masters(&self) -> Vec<u16> {
        let Some(live) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        let mut masters: Vec<u16> = cli(live.port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail")
            })
            .filter_map(|line| {
                let address = line.split_whitespace().nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The port of the master that owns `key`'s slot.
    ///
    /// # Panics
    /// If no master owns it (the cluster is not ok).
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let slot: u16 = cli(live.port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number");
        // `CLUSTER NODES`: `id addr@bus flags master ping pong epoch state slot-ranges…`.
        cli(live.port, &["CLUSTER", "NODES"])
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    return None;
                }
                let owns = fields[8..].iter().any(|range| {
                    let mut bounds = range.split('-').filter_map(|b| b.parse::<u16>().ok());
                    match (bounds.next(), bounds.next()) {
                        (Some(lo), Some(hi)) => (lo..=hi).contains(&slot),
                        (Some(only), None) => only == slot,
                        _ => false,
                    }
                });
                owns.then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())
                    .flatten()
            })
            .expect("a master owns the slot")
    }

    /// The number of keys a node holds (`DBSIZE`).
    pub fn keys_on(&self, port: u16) -> u64 {
        cli(port, &["DBSIZE"]).trim().parse().unwrap_or(0)
    }

    /// `INFO commandstats` of one node, for measurements.
    pub fn info(&self, port: u16, section: &str) -> String {
        cli(port, &["INFO", section])
    }

    /// Kills the node on `port` (as a crash would; it is not restarted).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `done` every 50 ms for up to `seconds`.
    ///
    /// # Panics
    /// When it never holds, naming `what`.
    pub fn wait_until(&self, what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "Redis Cluster: {what} did not happen within {seconds} s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
    }
}

/// `redis-cli -p PORT ARGS…`'s output (empty when it cannot connect).
fn cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
