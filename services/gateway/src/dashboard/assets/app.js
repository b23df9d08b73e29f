// Settings → API Keys. Talks to the key API (/v1/keys, /v1/me) with the session cookie; every
// call that changes something sends JSON and the session's X-CSRF-Token. A new key's secret
// exists only in the secret dialog's input while it is open: never in storage, a cookie, the URL
// or a console log.
"use strict";

(() => {
  const BASE = "/settings/api-keys";
  const PAGE_SIZE = 50;
  const STALE_DAYS = 30;
  // Older than this, a key that still works (not expired, not rotated out) gets a nudge to rotate
  // it (the product page's "rotate keys regularly"; 90 days is the common policy, e.g. AWS IAM's
  // credential report). Its owner gets the rotate button in the hint itself.
  const ROTATE_DAYS = 90;
  const DAY_MS = 86400000;
  const SEARCH_DELAY_MS = 250;
  const ACTIVE = "KEY_STATUS_ACTIVE";
  const INACTIVE = "KEY_STATUS_INACTIVE";
  const $ = (id) => document.getElementById(id);
  const state = { me: null, csrf: "", nextPage: null, keys: new Map(), usage: new Map(), opener: null, copied: false, listing: 0 };
  const USAGE_DAYS = 7;

  // ---- Formatting (the browser's locale) -------------------------------------------------
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const exactFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  function ago(date, now) {
    const seconds = Math.round((date - now) / 1000);
    const steps = [[60, "second"], [60, "minute"], [24, "hour"], [30, "day"], [12, "month"], [Infinity, "year"]];
    let value = seconds;
    for (const [size, unit] of steps) {
      if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
      value /= size;
    }
    return dateFormat.format(date);
  }

  function timeElement(iso, text) {
    const el = document.createElement("time");
    const date = new Date(iso);
    el.dateTime = iso;
    el.textContent = text;
    el.className = "exact";
    el.tabIndex = 0;
    el.dataset.exact = exactFormat.format(date);
    el.setAttribute("aria-label", `${text} (${exactFormat.format(date)})`);
    return el;
  }

  // ---- The API ---------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      const error = (body && body.error) || {};
      super(error.message || `the server answered ${status}`);
      this.status = status;
      this.code = error.code || "http_" + status;
      this.field = error.field;
      this.requestId = error.request_id;
      this.retryAfter = retryAfter;
    }

    // In words, with what to do and the request id.
    describe() {
      let text;
      if (this.status === 429) {
        const wait = this.retryAfter ? ` in ${this.retryAfter} second${this.retryAfter === "1" ? "" : "s"}` : " shortly";
        text = `Too many requests: try again${wait}.`;
      } else if (this.status === 503) {
        text = "The service is unavailable right now; try again in a moment.";
      } else {
        text = this.message.charAt(0).toUpperCase() + this.message.slice(1) + ".";
      }
      return this.requestId ? `${text} (request id ${this.requestId})` : text;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = state.csrf;
    }
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
        redirect: "error",
      });
    } catch (_) {
      throw new ApiError(0, { error: { message: "the server could not be reached; check your connection and try again" } });
    }
    if (response.status === 204) return null;
    let json = null;
    try { json = await response.json(); } catch (_) { json = null; }
    if (!response.ok) {
      const error = new ApiError(response.status, json, response.headers.get("Retry-After"));
      if (response.status === 401) signedOut(error.code === "invalid_session"
        ? "Your dashboard session has ended or was signed out."
        : "You are not signed in.");
      throw error;
    }
    return json;
  }

  // ---- Page states -----------------------------------------------------------------------
  function showError(error) {
    const box = $("error");
    box.textContent = error instanceof ApiError ? error.describe() : String(error);
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function announce(text) {
    $("live").textContent = text;
  }

  function signedOut(reason) {
    $("secret-value").value = "";
    for (const dialog of document.querySelectorAll("dialog[open]")) closeDialog(dialog);
    state.me = null;
    state.csrf = "";
    $("loading").hidden = true;
    $("keys-section").hidden = true;
    $("who").hidden = true;
    $("error").hidden = true;
    $("signed-out-reason").textContent = reason;
    $("signed-out").hidden = false;
  }

  // ---- Dialogs (focus returns to what opened them) ---------------------------------------
  function openDialog(dialog, opener) {
    dialog._opener = opener || document.activeElement;
    dialog.showModal();
  }

  function closeDialog(dialog) {
    if (!dialog.open) return;
    dialog.close();
    const opener = dialog._opener;
    dialog._opener = null;
    if (opener && document.contains(opener)) opener.focus();
    else $("create-button").focus();
  }

  // ---- Create ---------------------------------------------------------------------------
  // The server's rule for names (crates/keys KeyName), checked as you type.
  function nameProblem(raw) {
    const name = raw.trim();
    if (name.length === 0) return "Enter a name.";
    const length = [...name].length;
    if (length > 100) return `At most 100 characters (this is ${length}).`;
    if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return "No control characters (tabs, line breaks).";
    if (/[\u202a-\u202e\u2066-\u2069]/.test(name)) return "No bidirectional text controls.";
    return "";
  }

  function checkName() {
    const input = $("key-name");
    const problem = input.value === "" && !input.dataset.touched ? "" : nameProblem(input.value);
    $("key-name-error").textContent = problem;
    input.setAttribute("aria-invalid", problem ? "true" : "false");
    $("key-name-count").textContent = `${[...input.value.trim()].length}/100`;
    return !nameProblem(input.value);
  }

  // The server's rule for scopes (crates/keys Scopes): 1–64 of a-z 0-9 : . _ -, at most 32.
  function scopesOf(raw) {
    return raw.split(/[\s,]+/).filter((s) => s !== "");
  }

  function scopesProblem(raw) {
    const scopes = scopesOf(raw);
    const bad = scopes.find((s) => !/^[a-z0-9:._-]{1,64}$/.test(s));
    if (bad !== undefined) return `“${bad.slice(0, 64)}” is not a scope: use 1–64 of a–z, 0–9, “:”, “.”, “_” or “-”.`;
    if (new Set(scopes).size > 32) return "At most 32 scopes.";
    return "";
  }

  function checkScopes() {
    const input = $("key-scopes");
    const problem = scopesProblem(input.value);
    $("key-scopes-error").textContent = problem;
    input.setAttribute("aria-invalid", problem ? "true" : "false");
    return !problem;
  }

  function openCreate(opener, firstKey) {
    $("create-form").reset();
    $("key-name").dataset.touched = "";
    $("create-error").textContent = "";
    $("create-intro").hidden = !firstKey;
    checkName();
    checkScopes();
    openDialog($("create-dialog"), opener);
    $("key-name").focus();
  }

  async function submitCreate(event) {
    event.preventDefault();
    const input = $("key-name");
    input.dataset.touched = "1";
    if (!checkName()) {
      input.focus();
      return;
    }
    if (!checkScopes()) {
      $("key-scopes").focus();
      return;
    }
    const body = { name: input.value.trim() };
    const scopes = scopesOf($("key-scopes").value);
    if (scopes.length) body.scopes = scopes;
    const days = $("key-expiry").value;
    if (days) body.expiresAt = new Date(Date.now() + Number(days) * 86400000).toISOString().replace(/\.\d{3}Z$/, "Z");
    const submit = $("create-submit");
    submit.disabled = true;
    try {
      const created = await api("POST", "/v1/keys", body);
      closeDialog($("create-dialog"));
      showSecret(created, $("create-button"));
      await load();
    } catch (error) {
      if (error.status === 401) return;
      if (error.field === "name") {
        $("key-name-error").textContent = error.describe();
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } else if (error.field && error.field.startsWith("scopes")) {
        $("key-scopes-error").textContent = error.describe();
        $("key-scopes").setAttribute("aria-invalid", "true");
        $("key-scopes").focus();
      } else {
        $("create-error").textContent = error.describe();
      }
    } finally {
      submit.disabled = false;
    }
  }

  // ---- The secret, once ------------------------------------------------------------------
  function showSecret(created, opener) {
    state.copied = false;
    $("secret-name").textContent = created.key.name;
    $("secret-value").value = created.secret;
    $("copy-status").textContent = "";
    $("copy").textContent = "Copy";
    openDialog($("secret-dialog"), opener);
    $("copy").focus();
  }

  async function copySecret() {
    const input = $("secret-value");
    try {
      await navigator.clipboard.writeText(input.value);
      state.copied = true;
      $("copy").textContent = "Copied";
      $("copy-status").textContent = "Copied to the clipboard.";
    } catch (_) {
      // No clipboard access: select the text so the user can copy it themselves.
      input.focus();
      input.select();
      state.copied = true;
      $("copy-status").textContent = "Your browser did not allow copying: the key is selected, press Ctrl+C (⌘C on a Mac).";
    }
  }

  function finishSecret() {
    if (!state.copied) {
      openDialog($("leave-dialog"), $("secret-done"));
      $("leave-stay").focus();
      return;
    }
    closeSecret();
  }

  function closeSecret() {
    $("secret-value").value = "";
    $("secret-name").textContent = "";
    state.copied = false;
    closeDialog($("secret-dialog"));
  }

  // ---- The list --------------------------------------------------------------------------
  function svg(path) {
    const ns = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(ns, "svg");
    icon.setAttribute("viewBox", "0 0 24 24");
    icon.setAttribute("aria-hidden", "true");
    icon.setAttribute("focusable", "false");
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", path);
    icon.appendChild(p);
    return icon;
  }
  const TRASH = "M3 6h18M8 6V4h8v2M6 6l1 14h10l1-14M10 11v6M14 11v6";
  const CLOCK = "M21 12a9 9 0 1 1-18 0a9 9 0 0 1 18 0zM12 7v5l3 2";

  function button(text, className, onClick, label) {
    const b = document.createElement("button");
    b.type = "button";
    if (className) b.className = className;
    if (typeof text === "string") b.textContent = text;
    else b.appendChild(text);
    if (label) b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  function cell(label, className) {
    const td = document.createElement("td");
    if (label) td.dataset.label = label;
    if (className) td.className = className;
    return td;
  }

  function row(key, now) {
    const tr = document.createElement("tr");
    tr.dataset.id = key.id;
    const mine = state.me && key.userId === state.me.userId;

    const name = cell("Name");
    const title = document.createElement("span");
    title.className = "key-name";
    title.textContent = key.name;
    name.appendChild(title);
    if (key.expiresAt) {
      const at = new Date(key.expiresAt);
      const sub = document.createElement("span");
      sub.className = "sub";
      const when = at > now ? `expires ${ago(at, now)}` : `expired ${ago(at, now)}`;
      sub.appendChild(timeElement(key.expiresAt, key.replacedBy && at > now ? `rotated: ${when}` : when));
      name.appendChild(sub);
    }
    if (key.scopes && key.scopes.length) {
      const sub = document.createElement("span");
      sub.className = "sub scopes";
      sub.textContent = `Limited to: ${key.scopes.join(", ")}`;
      name.appendChild(sub);
    }
    tr.appendChild(name);

    const owner = cell("Owner", "owner-col");
    owner.textContent = mine ? `${key.userId} (you)` : key.userId;
    owner.hidden = !isAdmin();
    tr.appendChild(owner);

    const preview = cell("Key");
    const code = document.createElement("code");
    code.className = "preview";
    code.textContent = key.preview;
    preview.appendChild(code);
    tr.appendChild(preview);

    const created = cell("Created");
    const createdAt = new Date(key.createdAt);
    created.appendChild(timeElement(key.createdAt, dateFormat.format(createdAt)));
    const age = Math.floor((now - createdAt) / DAY_MS);
    const expired = key.expiresAt && new Date(key.expiresAt) <= now;
    if (age >= ROTATE_DAYS && !key.replacedBy && !expired) {
      const hint = document.createElement("span");
      hint.className = "stale rotate-hint";
      if (mine) {
        hint.append(`Created ${age} days ago — `);
        hint.appendChild(button("rotate it?", "link inline", (e) => openRotate(key, e.currentTarget), `Rotate it? Key ${key.name}, created ${age} days ago`));
      } else {
        hint.textContent = `Created ${age} days ago — its owner should rotate it`;
      }
      created.appendChild(hint);
    }
    tr.appendChild(created);

    const used = cell("Last used");
    if (key.lastUsedAt) {
      const at = new Date(key.lastUsedAt);
      used.appendChild(timeElement(key.lastUsedAt, ago(at, now)));
      if (now - at > STALE_DAYS * 86400000) {
        const hint = document.createElement("span");
        hint.className = "stale";
        hint.textContent = `Unused for ${STALE_DAYS}+ days: delete it if nothing needs it`;
        used.appendChild(hint);
      }
    } else {
      used.textContent = "Never used";
      if (now - new Date(key.createdAt) > STALE_DAYS * 86400000) {
        const hint = document.createElement("span");
        hint.className = "stale";
        hint.textContent = `Never used in ${STALE_DAYS}+ days`;
        used.appendChild(hint);
      }
    }
    tr.appendChild(used);

    const week = cell("Last 7 days", "usage-cell");
    week.appendChild(sparkline(key, now));
    tr.appendChild(week);

    const status = cell("Status");
    const wrap = document.createElement("div");
    wrap.className = "status-cell";
    const badge = document.createElement("span");
    const active = key.status === ACTIVE;
    badge.className = `badge ${active ? "active" : "inactive"}`;
    badge.textContent = active ? "Active" : "Inactive";
    wrap.appendChild(badge);
    // An admin may deactivate a member's key; turning it back on is its owner's call.
    if (mine || active) {
      wrap.appendChild(button(active ? "Deactivate" : "Activate", "", (e) => setStatus(key, active ? INACTIVE : ACTIVE, e.currentTarget),
        `${active ? "Deactivate" : "Activate"} key ${key.name}`));
    }
    status.appendChild(wrap);
    tr.appendChild(status);

    const actions = cell("", "actions-cell");
    if (mine) {
      actions.appendChild(button("Rename", "", () => startRename(tr, key), `Rename key ${key.name}`));
      if (!key.replacedBy) actions.appendChild(button("Rotate", "", (e) => openRotate(key, e.currentTarget), `Rotate key ${key.name}`));
    }
    const history = button(svg(CLOCK), "icon", (e) => openHistory(key, e.currentTarget), `History of key ${key.name}`);
    history.title = "History";
    actions.appendChild(history);
    actions.appendChild(button(svg(TRASH), "icon", (e) => openDelete(key, e.currentTarget), `Delete key ${key.name}`));
    tr.appendChild(actions);
    return tr;
  }

  // ---- Usage: a 7-day sparkline per key (inline SVG), from one request per page --------
  const numberFormat = new Intl.NumberFormat();
  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });

  // The hours of the last 7 × 24 hours (the answer's range starts at a whole hour, so it holds
  // up to one hour more, which is left out here: bars and totals cover the same span).
  function recent(usage, now) {
    return ((usage && usage.hours) || []).filter((hour) => now - new Date(hour.hour) < USAGE_DAYS * DAY_MS);
  }

  // The key's requests per 24 hours over the last 7 × 24 (the last bar ends now): allowed, and
  // refused for any reason (rate limit, inactive, expired, forbidden).
  function daily(usage, now) {
    const days = Array.from({ length: USAGE_DAYS }, (_, i) => ({
      end: new Date(now - (USAGE_DAYS - 1 - i) * DAY_MS), allowed: 0, refused: 0,
    }));
    for (const hour of recent(usage, now)) {
      const age = Math.max(0, Math.floor((now - new Date(hour.hour)) / DAY_MS));
      const day = days[USAGE_DAYS - 1 - age];
      day.allowed += hour.allowed;
      day.refused += hour.rateLimited + hour.inactive + hour.expired + hour.forbidden;
    }
    return days;
  }

  function summary(usage, now) {
    const t = { allowed: 0, rateLimited: 0, inactive: 0, expired: 0, forbidden: 0 };
    for (const hour of recent(usage, now)) {
      for (const name of Object.keys(t)) t[name] += hour[name];
    }
    const refused = t.rateLimited + t.inactive + t.expired + t.forbidden;
    if (t.allowed + refused === 0) return "No requests in the last 7 days";
    const parts = [];
    if (t.rateLimited) parts.push(`${numberFormat.format(t.rateLimited)} rate-limited`);
    if (t.inactive) parts.push(`${numberFormat.format(t.inactive)} while inactive`);
    if (t.expired) parts.push(`${numberFormat.format(t.expired)} after expiry`);
    if (t.forbidden) parts.push(`${numberFormat.format(t.forbidden)} forbidden`);
    return `Last 7 days: ${numberFormat.format(t.allowed)} allowed, ${numberFormat.format(refused)} refused${parts.length ? ` (${parts.join(", ")})` : ""}`;
  }

  function sparkline(key, now) {
    const wrap = document.createElement("span");
    wrap.className = "usage";
    if (!state.usage.has(key.id)) {
      wrap.textContent = "—";
      wrap.title = "Usage is not available right now";
      return wrap;
    }
    const usage = state.usage.get(key.id);
    const days = daily(usage, now);
    const text = summary(usage, now);
    const ns = "http://www.w3.org/2000/svg";
    const width = 10, gap = 2, height = 24;
    const svgEl = document.createElementNS(ns, "svg");
    svgEl.setAttribute("viewBox", `0 0 ${USAGE_DAYS * (width + gap) - gap} ${height}`);
    svgEl.setAttribute("width", String(USAGE_DAYS * (width + gap) - gap));
    svgEl.setAttribute("height", String(height));
    svgEl.setAttribute("aria-hidden", "true");
    svgEl.setAttribute("focusable", "false");
    const max = Math.max(1, ...days.map((d) => d.allowed + d.refused));
    days.forEach((day, i) => {
      const g = document.createElementNS(ns, "g");
      const title = document.createElementNS(ns, "title");
      title.textContent = `24 hours to ${dayFormat.format(day.end)}: ${numberFormat.format(day.allowed)} allowed, ${numberFormat.format(day.refused)} refused`;
      g.appendChild(title);
      const x = i * (width + gap);
      const bar = (value, base, className) => {
        const h = value === 0 ? 0 : Math.max(1, Math.round((value / max) * (height - 2)));
        const rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", String(x));
        rect.setAttribute("y", String(height - base - h));
        rect.setAttribute("width", String(width));
        rect.setAttribute("height", String(h));
        rect.setAttribute("class", className);
        g.appendChild(rect);
        return h;
      };
      const floor = document.createElementNS(ns, "rect");
      floor.setAttribute("x", String(x));
      floor.setAttribute("y", String(height - 1));
      floor.setAttribute("width", String(width));
      floor.setAttribute("height", "1");
      floor.setAttribute("class", "floor");
      g.appendChild(floor);
      const allowedHeight = bar(day.allowed, 0, "allowed");
      bar(day.refused, allowedHeight, "refused");
      svgEl.appendChild(g);
    });
    wrap.appendChild(svgEl);
    // Totals on hover (title) and on keyboard focus (the tip below, and the accessible name).
    wrap.tabIndex = 0;
    wrap.setAttribute("role", "img");
    wrap.setAttribute("aria-label", `${key.name}: ${text}`);
    const tip = document.createElement("span");
    tip.className = "usage-tip";
    tip.setAttribute("aria-hidden", "true");
    tip.textContent = text;
    wrap.appendChild(tip);
    return wrap;
  }

  // The usage of `keys` (one page) in one request; a failure leaves the sparklines out, never
  // the list.
  async function loadUsage(keys) {
    if (keys.length === 0) return;
    const params = new URLSearchParams({ keyIds: keys.map((k) => k.id).join(","), days: String(USAGE_DAYS) });
    try {
      const usage = await api("GET", `/v1/keys/usage?${params}`);
      for (const key of keys) state.usage.delete(key.id);
      for (const entry of usage.keys) state.usage.set(entry.keyId, entry);
    } catch (error) {
      if (error.status === 401) throw error;
    }
  }

  function isAdmin() {
    return Boolean(state.me && state.me.role === "admin");
  }

  function render() {
    const body = $("keys-body");
    const now = new Date();
    body.replaceChildren(...[...state.keys.values()].map((key) => row(key, now)));
    for (const th of document.querySelectorAll("th.owner-col")) th.hidden = !isAdmin();
    const empty = state.keys.size === 0;
    const searching = filters().toString() !== "";
    $("keys").hidden = empty;
    $("table-wrap").hidden = empty;
    $("keys-title").textContent = isAdmin() ? `Keys in ${state.me.workspaceId}` : "Your keys";
    // The search stays while it finds nothing (to change or clear it); with no keys at all and
    // no search there is nothing to search.
    $("search").hidden = empty && !searching;
    $("empty").hidden = !empty || searching;
    $("no-match").hidden = !empty || !searching;
    $("more").hidden = !state.nextPage;
  }

  // The search form as query parameters: only what is set.
  function filters() {
    const params = new URLSearchParams();
    const name = $("search-name").value.trim();
    if (name) params.set("nameContains", name);
    if ($("search-status").value) params.set("status", $("search-status").value);
    if ($("search-unused").value) params.set("unusedForDays", $("search-unused").value);
    return params;
  }

  // Loads the first page of the current search (or the next page of it, with `more`). A page
  // that arrives after a newer search started is dropped, so typing fast never shows the
  // results of an older search.
  async function load(more) {
    const params = filters();
    params.set("pageSize", String(PAGE_SIZE));
    if (more && state.nextPage) params.set("pageToken", state.nextPage);
    const listing = more ? state.listing : ++state.listing;
    const page = await api("GET", `/v1/keys?${params}`);
    if (listing !== state.listing) return page;
    await loadUsage(page.keys);
    if (listing !== state.listing) return page;
    if (!more) state.keys.clear();
    for (const key of page.keys) state.keys.set(key.id, key);
    state.nextPage = page.nextPageToken || null;
    render();
    return page;
  }

  let searchTimer = null;
  function search(delay) {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async () => {
      clearError();
      try {
        const page = await load();
        if (filters().toString() !== "") {
          const count = page.keys.length;
          announce(count === 0 ? "No keys match this search."
            : `${count}${page.nextPageToken ? " or more" : ""} key${count === 1 && !page.nextPageToken ? "" : "s"} found.`);
        }
      } catch (error) {
        if (error.status !== 401) showError(error);
      }
    }, delay);
  }

  // ---- Row actions -----------------------------------------------------------------------
  async function act(work, opener) {
    clearError();
    try {
      await work();
    } catch (error) {
      if (error.status !== 401) showError(error);
      if (opener && document.contains(opener)) opener.focus();
    }
  }

  function setStatus(key, status, opener) {
    act(async () => {
      const updated = await api("PATCH", `/v1/keys/${encodeURIComponent(key.id)}`, { status });
      state.keys.set(key.id, updated);
      render();
      announce(`${updated.name} is now ${status === ACTIVE ? "active" : "inactive"}.`);
      const again = document.querySelector(`tr[data-id="${key.id}"] .status-cell button`);
      if (again) again.focus();
    }, opener);
  }

  function startRename(tr, key) {
    const nameCell = tr.firstElementChild;
    const form = document.createElement("form");
    form.className = "rename-row";
    form.noValidate = true;
    const input = document.createElement("input");
    input.value = key.name;
    input.setAttribute("aria-label", `New name for ${key.name}`);
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `rename-error-${key.id}`;
    input.setAttribute("aria-describedby", error.id);
    const cancel = () => {
      render();
      const again = document.querySelector(`tr[data-id="${key.id}"] .actions-cell button`);
      if (again) again.focus();
    };
    form.append(input, button("Save", "primary", () => form.requestSubmit()), button("Cancel", "", cancel), error);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); cancel(); }
    });
    input.addEventListener("input", () => { error.textContent = nameProblem(input.value); });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const problem = nameProblem(input.value);
      if (problem) { error.textContent = problem; input.focus(); return; }
      try {
        const updated = await api("PATCH", `/v1/keys/${encodeURIComponent(key.id)}`, { name: input.value.trim() });
        state.keys.set(key.id, updated);
        render();
        announce(`Renamed to ${updated.name}.`);
        const again = document.querySelector(`tr[data-id="${key.id}"] .actions-cell button`);
        if (again) again.focus();
      } catch (err) {
        if (err.status !== 401) { error.textContent = err.describe(); input.focus(); }
      }
    });
    nameCell.replaceChildren(form);
    input.focus();
    input.select();
  }

  let pending = null;

  function openDelete(key, opener) {
    pending = key;
    const owner = state.me && key.userId !== state.me.userId ? ` (owned by ${key.userId})` : "";
    $("confirm-title").textContent = `Delete “${key.name}”?`;
    $("confirm-text").textContent = `The key ${key.preview}${owner} stops working everywhere within a second. Programs using it will get 401 errors. This cannot be undone.`;
    $("confirm-error").textContent = "";
    openDialog($("confirm-dialog"), opener);
    $("confirm-cancel").focus();
  }

  async function confirmDelete() {
    const key = pending;
    if (!key) return;
    $("confirm-ok").disabled = true;
    try {
      await api("DELETE", `/v1/keys/${encodeURIComponent(key.id)}`);
      pending = null;
      $("confirm-dialog")._opener = $("create-button");
      closeDialog($("confirm-dialog"));
      state.keys.delete(key.id);
      render();
      announce(`Deleted ${key.name}.`);
      if (state.keys.size === 0) await load();
    } catch (error) {
      if (error.status !== 401) $("confirm-error").textContent = error.describe();
    } finally {
      $("confirm-ok").disabled = false;
    }
  }

  function openRotate(key, opener) {
    pending = key;
    $("rotate-title").textContent = `Rotate “${key.name}”`;
    $("rotate-text").textContent = `A new key replaces ${key.preview} with the same name and limits. You will see the new key once.`;
    $("rotate-grace").value = "";
    $("rotate-error").textContent = "";
    openDialog($("rotate-dialog"), opener);
    $("rotate-grace").focus();
  }

  async function submitRotate(event) {
    event.preventDefault();
    const key = pending;
    if (!key) return;
    const grace = $("rotate-grace").value;
    $("rotate-ok").disabled = true;
    try {
      const rotated = await api("POST", `/v1/keys/${encodeURIComponent(key.id)}/rotate`, grace ? { gracePeriod: grace } : {});
      pending = null;
      const opener = $("rotate-dialog")._opener;
      closeDialog($("rotate-dialog"));
      showSecret(rotated, opener && document.contains(opener) ? opener : $("create-button"));
      await load();
    } catch (error) {
      if (error.status !== 401) $("rotate-error").textContent = error.describe();
    } finally {
      $("rotate-ok").disabled = false;
    }
  }

  // ---- History: the audit log of one key (GET /v1/audit?keyId=) -------------------------
  const FIELD_NAMES = {
    name: "name", status: "status", expires_at: "expiry", burst_limit: "burst limit",
    hourly_limit: "hourly limit", metadata: "metadata", scopes: "scopes", replaced_by: "replaced by",
  };
  let historyKey = null;
  let historyNext = null;
  let historyLoad = 0; // which load is current: an answer to an older one is dropped

  function actorText(actor) {
    if (actor.kind === "admin") return `admin “${actor.id}”`;
    const who = state.me && actor.userId === state.me.userId ? "you" : actor.userId;
    if (actor.kind === "key") return `${who}, with API key ${actor.id}`;
    return `${who}, in the dashboard`;
  }

  function valueText(field, value) {
    if (value === null || value === undefined) return field === "expires_at" ? "never" : "none";
    if (Array.isArray(value)) return value.length ? value.join(", ") : "all of its user's permissions";
    if (typeof value === "object" && "limit" in value) return `${numberFormat.format(value.limit)} per ${value.period_ms / 1000}s`;
    if (field === "expires_at") return dateTimeFormat.format(new Date(value));
    return String(value);
  }

  function eventText(event, key) {
    const after = event.after || {};
    const before = event.before || {};
    switch (event.action) {
      case "key.created": return `Created as “${after.name}”`;
      case "key.deleted": return "Deleted";
      case "key.rotated":
        return event.relatedKeyId === key.id
          ? `Created by rotating the key ${event.keyId}`
          : `Rotated: replaced by ${after.replaced_by}; this key stops ${valueText("expires_at", after.expires_at || key.expiresAt)}`;
      default: {
        const changes = Object.keys(after).map((f) => `${FIELD_NAMES[f] || f} ${valueText(f, before[f])} → ${valueText(f, after[f])}`);
        return `Changed ${changes.join("; ")}`;
      }
    }
  }

  function openHistory(key, opener) {
    historyKey = key;
    historyNext = null;
    historyLoad += 1;
    $("history-title").textContent = `History of “${key.name}”`;
    $("history-list").replaceChildren();
    $("history-error").textContent = "";
    $("history-status").textContent = "Loading…";
    openDialog($("history-dialog"), opener);
    $("history-close").focus();
    loadHistory();
  }

  async function loadHistory() {
    const key = historyKey;
    if (!key) return;
    const load = ++historyLoad;
    const query = new URLSearchParams({ keyId: key.id, pageSize: "20" });
    if (historyNext) query.set("pageToken", historyNext);
    $("history-more").disabled = true;
    try {
      const page = await api("GET", `/v1/audit?${query}`);
      if (load !== historyLoad) return;
      for (const event of page.events) {
        const item = document.createElement("li");
        const what = document.createElement("span");
        what.className = "history-what";
        what.textContent = eventText(event, key);
        const meta = document.createElement("span");
        meta.className = "sub";
        meta.appendChild(timeElement(event.time, dateTimeFormat.format(new Date(event.time))));
        meta.append(` by ${actorText(event.actor)}`);
        item.append(what, meta);
        $("history-list").appendChild(item);
      }
      historyNext = page.nextPageToken || null;
      $("history-more").hidden = !historyNext;
      const shown = $("history-list").children.length;
      $("history-status").textContent = shown === 0
        ? "No changes recorded (changes are kept for the audit retention, 90 days by default)."
        : `${shown} change${shown === 1 ? "" : "s"} shown, newest first.`;
    } catch (error) {
      if (error.status !== 401) $("history-error").textContent = error.describe();
      $("history-status").textContent = "";
    } finally {
      $("history-more").disabled = false;
    }
  }

  async function signOut() {
    clearError();
    try {
      await api("POST", `${BASE}/sign-out`, {});
    } catch (error) {
      // A 401 means the session had ended already (api() has shown it); anything else means the
      // session may still be valid: say so instead of claiming it ended.
      if (error.status !== 401) showError(error);
      return;
    }
    signedOut("You signed out.");
  }

  // ---- Start -----------------------------------------------------------------------------
  async function start() {
    $("create-button").addEventListener("click", (e) => openCreate(e.currentTarget, false));
    $("create-cancel").addEventListener("click", () => closeDialog($("create-dialog")));
    $("create-form").addEventListener("submit", submitCreate);
    $("key-name").addEventListener("input", () => { $("key-name").dataset.touched = "1"; checkName(); });
    $("key-scopes").addEventListener("input", checkScopes);
    $("copy").addEventListener("click", copySecret);
    $("secret-done").addEventListener("click", finishSecret);
    $("secret-dialog").addEventListener("cancel", (e) => { e.preventDefault(); finishSecret(); });
    $("leave-stay").addEventListener("click", () => closeDialog($("leave-dialog")));
    $("leave-close").addEventListener("click", () => {
      $("leave-dialog")._opener = null;
      $("leave-dialog").close();
      closeSecret();
    });
    $("confirm-cancel").addEventListener("click", () => closeDialog($("confirm-dialog")));
    $("confirm-ok").addEventListener("click", confirmDelete);
    $("rotate-cancel").addEventListener("click", () => closeDialog($("rotate-dialog")));
    $("history-close").addEventListener("click", () => closeDialog($("history-dialog")));
    $("history-more").addEventListener("click", loadHistory);
    $("rotate-form").addEventListener("submit", submitRotate);
    $("more").addEventListener("click", () => act(() => load(true), $("more")));
    $("search").addEventListener("submit", (e) => { e.preventDefault(); search(0); });
    $("search-name").addEventListener("input", () => search(SEARCH_DELAY_MS));
    $("search-status").addEventListener("change", () => search(0));
    $("search-unused").addEventListener("change", () => search(0));
    $("search-clear").addEventListener("click", () => {
      $("search").reset();
      search(0);
      $("search-name").focus();
    });
    $("sign-out").addEventListener("click", signOut);
    for (const dialog of document.querySelectorAll("dialog")) {
      if (dialog.id === "secret-dialog") continue;
      dialog.addEventListener("cancel", (e) => { e.preventDefault(); closeDialog(dialog); });
    }

    try {
      const me = await api("GET", "/v1/me");
      if (me.credential !== "session") {
        signedOut("This page needs a dashboard session, not an API key.");
        return;
      }
      state.me = me;
      state.csrf = me.csrfToken || "";
      $("who-name").textContent = me.displayName || me.email || me.userId;
      $("who-workspace").textContent = me.workspaceId;
      $("who").hidden = false;
      await load();
      $("loading").hidden = true;
      $("keys-section").hidden = false;
      if (state.keys.size === 0) openCreate($("create-button"), true);
    } catch (error) {
      $("loading").hidden = true;
      if (error.status !== 401) showError(error);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
