//! Settings → API Keys in a real browser against a real `stanna serve`, as a workspace member
//! uses it: signing in from another site, the empty-state prompt, create and copy once, the
//! list, last used, deactivate, rotate with a grace, delete with a confirmation, keyboard-only
//! use, 360 px, an admin managing a member's key, axe-core on every view, screenshots.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stanna_e2e::{Stanna, free_port, stanna_binary};
use stanna_testkit::TempDir;

use crate::browser::{self, Browser};

const TEST: &str = "dashboard_in_a_browser";

/// A `stanna serve` whose public URL is `http://localhost:PORT`, with last-used written every
/// 200 ms so a reload shows it.
struct Served {
    _stanna: Stanna,
    dir: TempDir,
    gateway: u16,
}

impl Served {
    fn start() -> Self {
        let dir = TempDir::new();
        let gateway = free_port();
        let env = vec![
            ("STANNA_REGISTRY_ADDR", format!("127.0.0.1:{}", free_port())),
            (
                "STANNA_AUTH_CHECK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("STANNA_QUOTA_ADDR", format!("127.0.0.1:{}", free_port())),
            ("STANNA_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            ("STANNA_PUBLIC_URL", format!("http://localhost:{gateway}")),
            ("STANNA_LAST_USED_FLUSH", "200ms".to_owned()),
        ];
        let stanna = Stanna::start(dir.path(), &["serve"], &env, "gateway listening on");
        Self {
            _stanna: stanna,
            dir,
            gateway,
        }
    }

    /// A sign-in link from `stanna session-link` (the secret `serve` keeps in its directory).
    fn link(&self, workspace: &str, user: &str, name: &str, role: &str) -> String {
        let output = Command::new(stanna_binary())
            .args([
                "session-link",
                "--workspace",
                workspace,
                "--user",
                user,
                "--name",
                name,
                "--role",
                role,
            ])
            .env(
                "STANNA_PUBLIC_URL",
                format!("http://localhost:{}", self.gateway),
            )
            .current_dir(self.dir.path())
            .output()
            .expect("run stanna session-link");
        assert!(
            output.status.success(),
            "session-link: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    fn page(&self) -> String {
        format!("http://localhost:{}/settings/api-keys", self.gateway)
    }
}

/// Another site (127.0.0.1 on another port: another origin and another site than `localhost`)
/// whose page links to the sign-in: Python's http.server over a directory with one page.
struct OtherSite {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl OtherSite {
    fn start() -> Self {
        let dir = TempDir::new();
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    /// Publishes a page linking to `link`; its URL.
    fn page_linking_to(&self, name: &str, link: &str) -> String {
        let html = format!(
            "<!doctype html><html lang=\"en\"><title>Product</title><body><main><h1>The product</h1>\
             <a id=\"to-keys\" href=\"{}\">Manage API keys</a></main></body></html>",
            link.replace('&', "&amp;").replace('"', "&quot;")
        );
        std::fs::write(self.dir.path().join(format!("{name}.html")), html).unwrap();
        format!("http://127.0.0.1:{}/{name}.html", self.port)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v1/me` with `key`: the status and the error code, if any.
async fn call_with(gateway: u16, key: &str) -> (u16, String) {
    let client = crate::http::client();
    let (status, _, body) =
        crate::http::get(&client, &format!("http://127.0.0.1:{gateway}/v1/me"), key).await;
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

/// Polls until `key` gets `status` (within `cap`).
async fn becomes(gateway: u16, key: &str, status: u16, cap: Duration) -> (u16, String) {
    let deadline = Instant::now() + cap;
    loop {
        let got = call_with(gateway, key).await;
        if got.0 == status || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in through `link`, starting from a page on another site: the interstitial, then its
/// button; lands on the page.
async fn sign_in(b: &Browser, other: &OtherSite, served: &Served, link: &str, expect: &str) {
    let from = other.page_linking_to("product", link);
    b.client.goto(&from).await.unwrap();
    b.click("#to-keys").await;
    b.until(
        "the interstitial",
        "return location.pathname === '/settings/api-keys/session'",
    )
    .await;
    let button = b
        .js("return document.querySelector('form button').textContent")
        .await;
    assert_eq!(button.as_str(), Some(expect), "the interstitial's button");
    b.click("form button").await;
    b.until(
        "the page, signed in",
        "return location.pathname === '/settings/api-keys' && !document.getElementById('who').hidden",
    )
    .await;
    assert_eq!(
        b.js("return location.href").await.as_str(),
        Some(served.page().as_str())
    );
}

/// The secret dialog's secret, after checking it is a key and showing the dialog.
async fn secret_shown(b: &Browser) -> String {
    b.until(
        "the secret dialog",
        "return document.getElementById('secret-dialog').open",
    )
    .await;
    let secret = b
        .js("return document.getElementById('secret-value').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("sk-") && secret.len() == 53, "{secret}");
    secret
}

/// Copies, checks the clipboard holds `secret`, closes: the secret is then nowhere in the page
/// or the browser's storage.
async fn copy_and_close(b: &Browser, secret: &str) {
    b.click("#copy").await;
    b.until(
        "the copy confirmation",
        "return document.getElementById('copy-status').textContent !== ''",
    )
    .await;
    let clipboard = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, e => done('error: ' + e));",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(clipboard.as_str(), Some(secret), "the clipboard");
    b.click("#secret-done").await;
    b.until(
        "the dialog to close",
        "return !document.getElementById('secret-dialog').open",
    )
    .await;
    let leftovers = b
        .js("return [document.documentElement.outerHTML, document.getElementById('secret-value').value, \
             JSON.stringify(Object.assign({}, localStorage)), JSON.stringify(Object.assign({}, sessionStorage)), \
             document.cookie, location.href, history.length.toString()]")
        .await;
    for place in leftovers.as_array().unwrap() {
        assert!(
            !place.as_str().unwrap_or_default().contains(secret),
            "the secret is still in the page or storage: {place}"
        );
    }
}

/// The row of the key named `name`, as text.
async fn row_text(b: &Browser, name: &str) -> String {
    b.js(&format!(
        "const r = [...document.querySelectorAll('#keys-body tr')].find(r => r.querySelector('.key-name') && r.querySelector('.key-name').textContent === {name:?}); return r ? r.innerText : ''"
    ))
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// Clicks `label`'s button in the row of `name`.
async fn row_button(b: &Browser, name: &str, label: &str) {
    let clicked = b
        .js(&format!(
            "const r = [...document.querySelectorAll('#keys-body tr')].find(r => r.querySelector('.key-name').textContent === {name:?});\
             const button = r && [...r.querySelectorAll('button')].find(b => (b.getAttribute('aria-label') || '').startsWith({label:?}) || b.textContent === {label:?});\
             if (button) {{ button.click(); return true; }} return false;"
        ))
        .await;
    assert_eq!(clicked, Value::Bool(true), "no {label} button for {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    let Some((chromium, driver)) = browser::tools() else {
        stanna_testkit::skip(
            TEST,
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        );
        return;
    };
    let Some(axe) = browser::axe_source() else {
        stanna_testkit::skip(
            TEST,
            "axe-core is not installed (npm install axe-core in target/ci-tools, as .ci/run does)",
        );
        return;
    };
    let served = Served::start();
    let other = OtherSite::start();
    let gateway = served.gateway;
    let mut violations = Vec::new();
    let b = Browser::start(&chromium, &driver, 1280).await;

    // Sign in from another site, through the interstitial.
    let link = served.link("ws_demo", "auth0|alice", "Alice", "member");
    sign_in(&b, &other, &served, &link, "Continue as Alice in ws_demo").await;
    b.grant_clipboard().await;

    // No keys: the create dialog opens by itself, with a sentence on what a key is for.
    b.until(
        "the empty-state prompt",
        "return document.getElementById('create-dialog').open && !document.getElementById('create-intro').hidden",
    )
    .await;
    assert_eq!(
        b.focused().await,
        "key-name",
        "the name field has the focus"
    );
    b.screenshot("empty-state-1280").await;
    b.client.set_window_size(375, 800).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.screenshot("empty-state-375").await;
    b.client.set_window_size(1280, 900).await.unwrap();
    violations.extend(b.axe(&axe, "empty state with the create dialog").await);

    // The name's rules as you type.
    b.type_into("#key-name", &"x".repeat(101)).await;
    let error = b
        .js("return document.getElementById('key-name-error').textContent")
        .await;
    assert!(
        error.as_str().unwrap().contains("At most 100 characters"),
        "{error}"
    );
    b.js("document.getElementById('key-name').value = ''").await;
    b.type_into("#key-name", "Production Dashboard").await;
    b.screenshot("create-dialog-1280").await;
    b.click("#create-submit").await;
    let first = secret_shown(&b).await;
    violations.extend(b.axe(&axe, "the secret dialog").await);
    copy_and_close(&b, &first).await;
    let row = row_text(&b, "Production Dashboard").await;
    let preview = format!("sk-{}...{}", &first[3..7], &first[first.len() - 4..]);
    assert!(row.contains(&preview), "the preview is listed: {row}");
    assert!(
        row.contains("Never used") && row.contains("Active"),
        "{row}"
    );

    // A call with the key shows as last used after a reload.
    assert_eq!(call_with(gateway, &first).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.client.refresh().await.unwrap();
    b.until(
        "the list after a reload",
        "return !document.getElementById('keys').hidden",
    )
    .await;
    let row = row_text(&b, "Production Dashboard").await;
    assert!(!row.contains("Never used"), "last used after a call: {row}");
    b.screenshot("list-1280").await;
    violations.extend(b.axe(&axe, "the list").await);

    // Rename inline: Enter saves, and the list shows the new name.
    row_button(&b, "Production Dashboard", "Rename").await;
    b.until(
        "the rename field",
        "return document.activeElement && document.activeElement.closest('.rename-row') !== null",
    )
    .await;
    // The field opens with the name selected: typing replaces it.
    b.keys("Prod Dashboard\u{e007}").await;
    b.until(
        "the new name",
        "return [...document.querySelectorAll('.key-name')].some(x => x.textContent === 'Prod Dashboard')",
    )
    .await;
    row_button(&b, "Prod Dashboard", "Rename").await;
    b.until(
        "the rename field",
        "return document.activeElement && document.activeElement.closest('.rename-row') !== null",
    )
    .await;
    b.keys("Production Dashboard\u{e007}").await;
    b.until(
        "the name back",
        "return [...document.querySelectorAll('.key-name')].some(x => x.textContent === 'Production Dashboard')",
    )
    .await;

    // Deactivate → 401 inactive_api_key at the gateway; activate again.
    row_button(&b, "Production Dashboard", "Deactivate").await;
    b.until(
        "the inactive badge",
        "return [...document.querySelectorAll('.badge')].some(x => x.textContent === 'Inactive')",
    )
    .await;
    assert_eq!(
        becomes(gateway, &first, 401, Duration::from_secs(5)).await,
        (401, "inactive_api_key".to_owned())
    );
    row_button(&b, "Production Dashboard", "Activate").await;
    assert_eq!(
        becomes(gateway, &first, 200, Duration::from_secs(5))
            .await
            .0,
        200
    );

    // Rotate with a 1 h grace: both keys work.
    row_button(&b, "Production Dashboard", "Rotate").await;
    b.until(
        "the rotate dialog",
        "return document.getElementById('rotate-dialog').open",
    )
    .await;
    b.client
        .find(fantoccini::Locator::Css("#rotate-grace"))
        .await
        .unwrap()
        .select_by_value("3600s")
        .await
        .unwrap();
    b.click("#rotate-ok").await;
    let second = secret_shown(&b).await;
    assert_ne!(second, first);
    copy_and_close(&b, &second).await;
    assert_eq!(
        call_with(gateway, &first).await.0,
        200,
        "the old key in its grace"
    );
    assert_eq!(call_with(gateway, &second).await.0, 200, "the new key");
    b.until(
        "the rotated key's expiry",
        "return document.body.innerText.includes('rotated: expires')",
    )
    .await;

    // The old key's history (the audit log): every change made here, newest first, each by "you,
    // in the dashboard"; the dialog gives the focus back to its button.
    let old_id = &first[3..15];
    b.js(&format!(
        "[...document.querySelector('tr[data-id=\"{old_id}\"]').querySelectorAll('button')].find(b => (b.getAttribute('aria-label') || '').startsWith('History')).click()"
    ))
    .await;
    b.until(
        "the key's history",
        "return document.getElementById('history-dialog').open && document.querySelectorAll('#history-list li').length >= 4",
    )
    .await;
    let history: Vec<String> = serde_json::from_value(
        b.js("return [...document.querySelectorAll('#history-list li')].map(li => li.innerText)")
            .await,
    )
    .unwrap();
    assert!(
        history[0].starts_with("Rotated: replaced by"),
        "{history:?}"
    );
    assert!(
        history
            .last()
            .unwrap()
            .starts_with("Created as “Production Dashboard”"),
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .any(|e| e.contains("status active → inactive")),
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .all(|e| e.contains("by you, in the dashboard")),
        "{history:?}"
    );
    b.screenshot("key-history-1280").await;
    violations.extend(b.axe(&axe, "the key's history").await);
    b.click("#history-close").await;
    let focused = b
        .js("return document.activeElement.getAttribute('aria-label') || ''")
        .await;
    assert!(
        focused
            .as_str()
            .unwrap_or_default()
            .starts_with("History of key"),
        "the focus is back on its button: {focused}"
    );

    // Delete (the trash icon) with a confirmation naming the key → refused within a second.
    let names = b
        .js("return [...document.querySelectorAll('#keys-body tr')].map(r => r.dataset.id + ' ' + r.querySelector('.preview').textContent)")
        .await;
    assert!(names.to_string().contains(old_id), "{names}");
    b.js(&format!(
        "document.querySelector('tr[data-id=\"{old_id}\"] button.icon[aria-label^=\"Delete\"]').click()"
    ))
    .await;
    b.until(
        "the confirmation",
        "return document.getElementById('confirm-dialog').open",
    )
    .await;
    let confirm = b
        .js("return document.getElementById('confirm-dialog').innerText")
        .await;
    assert!(
        confirm.as_str().unwrap().contains("Production Dashboard"),
        "the confirmation names the key: {confirm}"
    );
    b.screenshot("delete-confirmation-1280").await;
    violations.extend(b.axe(&axe, "the delete confirmation").await);
    b.click("#confirm-ok").await;
    let started = Instant::now();
    let refused = becomes(gateway, &first, 401, Duration::from_secs(5)).await;
    assert_eq!(refused, (401, "invalid_api_key".to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        started.elapsed()
    );
    assert_eq!(
        call_with(gateway, &second).await.0,
        200,
        "the other key is kept"
    );

    // A key limited to scopes: the dialog checks them as they are typed, and the list says what
    // the key is limited to.
    b.click("#create-button").await;
    b.until(
        "the create dialog",
        "return document.getElementById('create-dialog').open",
    )
    .await;
    b.type_into("#key-name", "Reports Script").await;
    b.type_into("#key-scopes", "reports:read Reports").await;
    let error = b
        .js("return document.getElementById('key-scopes-error').textContent")
        .await;
    assert!(
        error.as_str().unwrap().contains("“Reports” is not a scope"),
        "{error}"
    );
    b.js("document.getElementById('key-scopes').value = ''")
        .await;
    b.type_into("#key-scopes", "reports:read, analytics:read")
        .await;
    b.click("#create-submit").await;
    let scoped = secret_shown(&b).await;
    copy_and_close(&b, &scoped).await;
    let row = row_text(&b, "Reports Script").await;
    assert!(
        row.contains("Limited to: analytics:read, reports:read"),
        "the scopes are listed: {row}"
    );
    violations.extend(b.axe(&axe, "a key limited to scopes").await);

    // Search: the list narrows as a name is typed (ignoring case); a search that finds nothing
    // says so and offers to clear it.
    let listed = "return [...document.querySelectorAll('#keys-body tr .key-name')].map(n => n.textContent).join('|')";
    b.type_into("#search-name", "REPORT").await;
    b.until(
        "only the matching key",
        &format!("return (() => {{ {listed} }})() === 'Reports Script'"),
    )
    .await;
    b.js("document.getElementById('search-name').value = ''")
        .await;
    b.type_into("#search-name", "no such key").await;
    b.until(
        "the no-match panel",
        "return !document.getElementById('no-match').hidden && document.getElementById('keys').hidden && !document.getElementById('search').hidden",
    )
    .await;
    assert!(
        b.js("return document.getElementById('empty').hidden").await == Value::Bool(true),
        "a search that finds nothing is not the first-key empty state"
    );
    b.screenshot("search-no-match-1280").await;
    violations.extend(b.axe(&axe, "a search that finds nothing").await);
    b.click("#search-clear").await;
    b.until(
        "every key again",
        &format!("return (() => {{ {listed} }})().split('|').length >= 2 && document.getElementById('search-name').value === ''"),
    )
    .await;
    // Inactive keys only: there are none now.
    b.js("const s = document.getElementById('search-status'); s.value = 'KEY_STATUS_INACTIVE'; s.dispatchEvent(new Event('change'))")
        .await;
    b.until(
        "no inactive key",
        "return !document.getElementById('no-match').hidden",
    )
    .await;
    b.click("#search-clear").await;

    // Each row's 7-day sparkline, from one usage request for the page: the key called through
    // the gateway above shows its requests (auth-check writes them every few seconds, so the
    // list is reloaded until they are there), and focus shows the totals.
    let started = Instant::now();
    loop {
        b.js("const s = document.getElementById('search-status'); s.dispatchEvent(new Event('change'))")
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let label = b
            .js("const r = [...document.querySelectorAll('#keys-body tr')].find(r => r.querySelector('.key-name').textContent === 'Production Dashboard'); const u = r && r.querySelector('.usage[role=img]'); return u ? u.getAttribute('aria-label') : ''")
            .await;
        let label = label.as_str().unwrap_or_default().to_owned();
        if label.contains("allowed") && !label.contains(": 0 allowed") {
            assert!(
                label.starts_with("Production Dashboard: Last 7 days: "),
                "{label}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sparkline never showed the key's requests: {label:?}"
        );
    }
    let bars = b
        .js("return document.querySelectorAll('#keys-body tr .usage svg g').length / document.querySelectorAll('#keys-body tr .usage svg').length")
        .await;
    assert_eq!(bars.as_f64(), Some(7.0), "seven days per sparkline");
    b.js("[...document.querySelectorAll('#keys-body tr')].find(r => r.querySelector('.key-name').textContent === 'Production Dashboard').querySelector('.usage[role=img]').focus()")
        .await;
    let tip = b
        .js("const t = document.activeElement.querySelector('.usage-tip'); return t && getComputedStyle(t).display !== 'none' ? t.textContent : ''")
        .await;
    assert!(
        tip.as_str().unwrap_or_default().contains("Last 7 days"),
        "focus shows the totals: {tip}"
    );
    b.screenshot("usage-focus-1280").await;
    violations.extend(b.axe(&axe, "the usage sparklines").await);

    // 400 days on (the page's clock moved; the keys did not change): an old key asks to be
    // rotated, and the question opens the rotate dialog.
    b.js("window.RealDate = Date; const shift = 400 * 86400000; \
          window.Date = class extends window.RealDate { \
            constructor(...a) { if (a.length === 0) super(window.RealDate.now() + shift); else super(...a); } \
            static now() { return window.RealDate.now() + shift; } }; \
          const s = document.getElementById('search-status'); s.dispatchEvent(new Event('change'))")
        .await;
    b.until(
        "the rotation hint",
        "return document.querySelectorAll('.rotate-hint').length >= 1",
    )
    .await;
    let row = row_text(&b, "Reports Script").await;
    assert!(
        row.contains("Created 400 days ago — rotate it?"),
        "the age hint: {row}"
    );
    b.screenshot("rotate-hint-1280").await;
    violations.extend(b.axe(&axe, "the rotation hint").await);
    row_button(&b, "Reports Script", "Rotate it?").await;
    b.until(
        "the rotate dialog",
        "return document.getElementById('rotate-dialog').open",
    )
    .await;
    b.click("#rotate-cancel").await;
    b.js("window.Date = window.RealDate; const s = document.getElementById('search-status'); s.dispatchEvent(new Event('change'))")
        .await;
    b.until(
        "no hint today",
        "return document.querySelectorAll('.rotate-hint').length === 0",
    )
    .await;

    // Keyboard only: Tab to "Create New Key", Enter, type, Enter; Esc on the secret asks first;
    // the focus returns to the button.
    b.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        .await;
    let mut tabs = 0;
    while b.focused().await != "create-button" {
        b.keys("\u{e004}").await; // Tab
        tabs += 1;
        assert!(tabs < 30, "Create New Key is not reachable with Tab");
    }
    b.keys("\u{e007}").await; // Enter
    b.until(
        "the create dialog",
        "return document.getElementById('create-dialog').open",
    )
    .await;
    assert_eq!(b.focused().await, "key-name");
    b.keys("Keyboard Key\u{e007}").await;
    let third = secret_shown(&b).await;
    b.keys("\u{e00c}").await; // Escape: not copied, so it asks
    b.until(
        "the leave confirmation",
        "return document.getElementById('leave-dialog').open",
    )
    .await;
    assert!(
        b.js("return document.getElementById('secret-dialog').open")
            .await
            == Value::Bool(true),
        "the secret stays until the user confirms"
    );
    assert_eq!(b.focused().await, "leave-stay");
    b.keys("\u{e004}").await;
    assert_eq!(b.focused().await, "leave-close");
    b.keys("\u{e007}").await;
    b.until(
        "both dialogs closed",
        "return !document.querySelector('dialog[open]')",
    )
    .await;
    assert_eq!(b.focused().await, "create-button", "the focus returns");
    let page = b.js("return document.documentElement.outerHTML").await;
    assert!(!page.as_str().unwrap().contains(&third));

    // 360 px: no horizontal scroll (and a 375 px set of screenshots).
    for width in [360, 375] {
        b.client.set_window_size(width, 800).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let scroll = b
            .js("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        let (content, viewport) = (scroll[0].as_u64().unwrap(), scroll[1].as_u64().unwrap());
        assert!(content <= viewport, "{width} px: {content} px wide content");
    }
    b.screenshot("list-375").await;
    b.click("#create-button").await;
    b.until(
        "the create dialog",
        "return document.getElementById('create-dialog').open",
    )
    .await;
    b.screenshot("create-dialog-375").await;
    b.keys("\u{e00c}").await;
    b.js(&format!(
        "document.querySelector('tr[data-id=\"{}\"] button.icon[aria-label^=\"Delete\"]').click()",
        &second[3..15]
    ))
    .await;
    b.until(
        "the confirmation",
        "return document.getElementById('confirm-dialog').open",
    )
    .await;
    b.screenshot("delete-confirmation-375").await;
    b.click("#confirm-cancel").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // An admin of the workspace sees Alice's keys with their owner and deletes one; signing in
    // as someone else first asks.
    let admin_link = served.link("ws_demo", "bob@example.com", "Bob", "admin");
    b.client.goto(&admin_link).await.unwrap();
    let warning = b
        .js("return document.querySelector('.warning') ? document.querySelector('.warning').innerText : ''")
        .await;
    assert!(
        warning.as_str().unwrap().contains("signed in as Alice"),
        "a different identity is asked about: {warning}"
    );
    b.click("form button").await;
    b.until(
        "the admin's list",
        "return !document.getElementById('keys').hidden && !document.querySelector('th.owner-col').hidden",
    )
    .await;
    let row = row_text(&b, "Keyboard Key").await;
    assert!(row.contains("auth0|alice"), "the owner column: {row}");
    b.screenshot("admin-list-1280").await;
    violations.extend(b.axe(&axe, "the admin's list").await);
    row_button(&b, "Keyboard Key", "Delete").await;
    b.until(
        "the confirmation",
        "return document.getElementById('confirm-dialog').open",
    )
    .await;
    b.click("#confirm-ok").await;
    assert_eq!(
        becomes(gateway, &third, 401, Duration::from_secs(5)).await,
        (401, "invalid_api_key".to_owned())
    );

    // The interstitial and a refused link are checked too; then sign out: the page says so.
    b.client.goto(&admin_link).await.unwrap();
    violations.extend(b.axe(&axe, "the interstitial").await);
    b.click("form button").await;
    b.until(
        "the refusal",
        "return document.title.startsWith('Sign-in refused')",
    )
    .await;
    let refusal = b.js("return document.body.innerText").await;
    assert!(
        refusal.as_str().unwrap().contains("used already"),
        "{refusal}"
    );
    b.client.goto(&served.page()).await.unwrap();
    b.until("the page", "return !document.getElementById('who').hidden")
        .await;
    b.click("#sign-out").await;
    b.until(
        "the signed-out panel",
        "return !document.getElementById('signed-out').hidden",
    )
    .await;
    violations.extend(b.axe(&axe, "signed out").await);
    b.client.refresh().await.unwrap();
    b.until(
        "signed out after a reload",
        "return !document.getElementById('signed-out').hidden",
    )
    .await;

    assert!(
        violations.is_empty(),
        "axe-core found serious or critical problems:\n{}",
        violations.join("\n")
    );
    b.close().await;
}
