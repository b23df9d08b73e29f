//! A real browser for the dashboard's tests: Debian's `chromium` driven through `chromedriver`
//! (WebDriver, with fantoccini), headless and without the sandbox (CI runs as root), with the
//! clipboard permitted; plus axe-core (installed by `.ci/run` from npm, loaded by the test, never
//! shipped) and screenshots under `target/dashboard-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver and a browser session on it; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// The browser's profile directory: unique, so every process of this browser can be found.
    profile: stanna_testkit::TempDir,
}

impl Drop for Browser {
    /// Ends chromedriver and every chromium process of this browser (killing chromedriver alone
    /// leaves the browser running, and a failed test never reaches a clean `close`): they are
    /// found by the profile directory on their command lines.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.path().display().to_string()])
            .status();
    }
}

/// Where chromium and chromedriver are, or `None` (the caller prints SKIPPED).
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| {
                names.iter().find_map(|n| {
                    let out = Command::new("which").arg(n).output().ok()?;
                    let path = String::from_utf8(out.stdout).ok()?;
                    let path = path.trim();
                    (!path.is_empty()).then(|| PathBuf::from(path))
                })
            })
    };
    Some((
        find(&["/usr/bin/chromium", "chromium"])?,
        find(&["/usr/bin/chromedriver", "chromedriver"])?,
    ))
}

/// axe-core's script, from `AXE_CORE_JS` or where `.ci/run` installs it.
pub fn axe_source() -> Option<String> {
    let path = std::env::var_os("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/ci-tools/node_modules/axe-core/axe.min.js"));
    std::fs::read_to_string(path).ok()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The W3C "Set Permission" command (chromedriver implements it).
#[derive(Debug)]
struct SetPermission(&'static str);

impl WebDriverCompatibleCommand for SetPermission {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/permissions",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"descriptor": {"name": self.0}, "state": "granted"}).to_string()),
        )
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session of `width`×900.
    pub async fn start(chromium: &Path, driver: &Path, width: u32) -> Self {
        let port = stanna_testkit::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = stanna_testkit::TempDir::new();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},900"), "--lang=en-US", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a chromium session");
        Self {
            client,
            driver: child,
            profile,
        }
    }

    /// Permits the clipboard to the current page's origin (permissions belong to an origin, so
    /// this follows the first visit).
    pub async fn grant_clipboard(&self) {
        for permission in ["clipboard-read", "clipboard-write"] {
            self.client
                .issue_cmd(SetPermission(permission))
                .await
                .expect("grant the clipboard");
        }
    }

    /// Ends the WebDriver session (chromedriver quits the browser); `Drop` does the rest.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Runs `script` (a function body) and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns `true`, up to 10 s.
    pub async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A script error means the page is not there yet (a navigation in flight, an element
            // not rendered): keep waiting, as for `false`.
            if matches!(
                self.client.execute(script, Vec::new()).await,
                Ok(Value::Bool(true))
            ) {
                return;
            }
            if Instant::now() > deadline {
                let body = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!("waited 10 s for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Presses the keys of `text` (WebDriver key codes for Tab, Enter, Escape) as a keyboard
    /// does, to whatever has the focus (keyboard-only use).
    pub async fn keys(&self, text: &str) {
        use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".to_owned());
        for c in text.chars() {
            actions = actions
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("press keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// The id of the element that has the focus.
    pub async fn focused(&self) -> String {
        self.js("return document.activeElement ? document.activeElement.id : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// axe-core's serious and critical violations on the page as it is now.
    pub async fn axe(&self, axe: &str, view: &str) -> Vec<String> {
        self.client
            .execute(axe, Vec::new())
            .await
            .expect("load axe-core");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']})\
                   .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                     .map(v => v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.target.join(' ')).join(', '))))\
                   .catch(e => done(['axe failed: ' + e]));",
                Vec::new(),
            )
            .await
            .expect("run axe-core");
        result
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{view}: {}", v.as_str().unwrap_or_default()))
            .collect()
    }

    /// Saves a screenshot as `target/dashboard-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = workspace().join("target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }
}
