//! A PostgreSQL primary and its streaming replicas of the test's own: `initdb` and `pg_basebackup`
//! into a temporary directory, on free loopback ports, run as the `postgres` user when the test
//! runs as root (PostgreSQL refuses to run as root), stopped and removed on drop. The shared
//! server is never reconfigured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sea_orm::{ConnectionTrait, Database};

use crate::ports::free_port;

/// A primary and hot standbys streaming from it.
pub struct OwnPostgresReplication {
    bin: PathBuf,
    dir: PathBuf,
    primary_port: u16,
    /// The replicas' ports, in the order they were made.
    replica_ports: Vec<u16>,
    /// Whether commands run as `postgres` (the test runs as root).
    as_postgres: bool,
}

impl OwnPostgresReplication {
    /// Starts a primary and `replicas` replicas, or `None` (after a loud skip) where
    /// PostgreSQL's server programs are not installed or there is no `postgres` user to run them
    /// as.
    ///
    /// # Panics
    /// When the programs exist but the servers cannot be made: a broken machine, not a skip.
    pub fn start(test: &str, replicas: usize) -> Option<Self> {
        let Some(bin) = server_bin_dir() else {
            crate::skip(
                test,
                "PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup under /usr/lib/postgresql/*/bin) are not installed",
            );
            return None;
        };
        let as_postgres = is_root();
        if as_postgres && !user_exists("postgres") {
            crate::skip(
                test,
                "running as root without a postgres user to run PostgreSQL as",
            );
            return None;
        }
        let dir = make_dir(as_postgres);
        let replication = Self {
            bin,
            dir,
            primary_port: free_port(),
            replica_ports: (0..replicas.max(1)).map(|_| free_port()).collect(),
            as_postgres,
        };
        replication.make();
        Some(replication)
    }

    fn make(&self) {
        let primary = self.dir.join("primary");
        self.run(
            "initdb",
            &[
                "-D",
                path(&primary),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
            ],
        );
        // initdb's pg_hba.conf already trusts replication connections from 127.0.0.1.
        self.append_conf(
            &primary,
            &format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 wal_level = replica\nmax_wal_senders = 4\nfsync = off\nsynchronous_commit = on\n",
                self.primary_port,
                self.dir.display()
            ),
        );
        self.pg_ctl(&primary, "start");
        for (i, port) in self.replica_ports.iter().enumerate() {
            self.make_replica(&self.replica_dir(i), *port);
        }
    }

    fn replica_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("replica{i}"))
    }

    fn make_replica(&self, replica: &Path, port: u16) {
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                path(replica),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        self.append_conf(replica, &format!("port = {port}\nhot_standby = on\n"));
        self.pg_ctl(replica, "start");
    }

    /// The primary's URL (database `postgres`).
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    /// Replica `i`'s URL.
    pub fn replica_url(&self, i: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.replica_ports[i]
        )
    }

    /// Replica `i`'s address.
    pub fn replica_addr(&self, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.replica_ports[i]))
    }

    /// Waits (10 s at most) until replica `i` has replayed everything the primary had flushed
    /// when asked.
    ///
    /// # Panics
    /// When it has not after 10 s.
    pub async fn wait_caught_up(&self, i: usize) {
        let lsn = |url: String, sql: &'static str| async move {
            let db = Database::connect(url)
                .await
                .expect("connect to a test server");
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    sql,
                ))
                .await
                .expect(sql)
                .expect("one row");
            db.close().await.ok();
            row.try_get::<i64>("", "lsn").expect("an LSN")
        };
        let target = lsn(
            self.primary_url(),
            "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint AS lsn",
        )
        .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lsn(
            self.replica_url(i),
            "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn",
        )
        .await
            < target
        {
            assert!(
                std::time::Instant::now() < deadline,
                "replica {i} did not catch up within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops replaying WAL on replica `i` (it still receives it): it falls behind by every
    /// change from now on, as a slow one would.
    pub async fn pause_replay(&self, i: usize) {
        self.replica_sql(i, "SELECT pg_wal_replay_pause()").await;
    }

    /// Replica `i` replays again.
    pub async fn resume_replay(&self, i: usize) {
        self.replica_sql(i, "SELECT pg_wal_replay_resume()").await;
    }

    /// Stops replica `i` (fast shutdown: connections are cut).
    pub fn stop_replica(&self, i: usize) {
        self.pg_ctl_mode(&self.replica_dir(i), "stop", "fast");
    }

    /// Starts replica `i` again.
    pub fn start_replica(&self, i: usize) {
        self.pg_ctl(&self.replica_dir(i), "start");
    }

    /// Runs `sql` on the primary.
    ///
    /// # Panics
    /// When it fails.
    pub async fn primary_sql(&self, sql: &str) {
        run_sql(self.primary_url(), sql).await;
    }

    async fn replica_sql(&self, i: usize, sql: &str) {
        run_sql(self.replica_url(i), sql).await;
    }

    fn append_conf(&self, data: &Path, text: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        file.write_all(text.as_bytes())
            .expect("write postgresql.conf");
    }

    fn pg_ctl(&self, data: &Path, action: &str) {
        let log = data.with_extension("log");
        self.run(
            "pg_ctl",
            &["-D", path(data), "-l", path(&log), "-w", "-t", "60", action],
        );
    }

    fn pg_ctl_mode(&self, data: &Path, action: &str, mode: &str) {
        self.run("pg_ctl", &["-D", path(data), "-w", "-m", mode, action]);
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnPostgresReplication {
    fn drop(&mut self) {
        let nodes = (0..self.replica_ports.len()).map(|i| self.replica_dir(i));
        for data in nodes.chain([self.dir.join("primary")]) {
            if data.join("postmaster.pid").exists() {
                let _ = self
                    .command("pg_ctl")
                    .args(["-D", path(&data), "-w", "-m", "immediate", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The newest `/usr/lib/postgresql/N/bin` holding the programs (Debian's layout).
fn server_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "pg_basebackup"]
                .iter()
                .all(|p| bin.join(p).exists())
                .then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A new directory the server's user owns (`mktemp -d` as that user).
fn make_dir(as_postgres: bool) -> PathBuf {
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "mktemp"]);
        command
    } else {
        Command::new("mktemp")
    };
    let output = command
        .args(["-d", "/tmp/stanna-pg-XXXXXX"])
        .output()
        .expect("mktemp");
    assert!(output.status.success(), "mktemp -d failed");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

async fn run_sql(url: String, sql: &str) {
    let db = Database::connect(url)
        .await
        .expect("connect to a test server");
    db.execute_unprepared(sql).await.expect(sql);
    db.close().await.ok();
}
