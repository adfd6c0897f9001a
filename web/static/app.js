// Dragonfly panel script: one ES module, no dependencies, no build step.
//
// The server renders every page complete; this script makes it live. One EventSource on
// /api/events feeds all updates (no polling anywhere), and every change goes through the JSON
// API with errors shown as toasts or next to the field. Sections: helpers · formatting · API ·
// toasts · theme · dialogs · live stream · shared components · pages (dashboard, machines,
// machine, tags) · start.

// ------------------------------------------------------------------------------ helpers

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const readJSON = (id) => {
  const el = document.getElementById(id);
  try { return el ? JSON.parse(el.textContent) : {}; } catch { return {}; }
};
const APP = readJSON("app-data");   // templates, operator actions and their icons, states
const PAGE = readJSON("page-data"); // what this page's server handler handed over
const PAGE_SIZE = PAGE.page_size || 100;
// What the caller may do (from access control); the API enforces it, the pages hide the rest.
const CAN = {
  read: APP.can?.read !== false,
  write: APP.can?.write !== false,
  action: (a) => APP.can?.actions?.[a] !== false,
};
const PAGE_NAME = document.body.dataset.page;
// Pages for callers who cannot read the fleet (yet): no event stream, no sign-in redirects.
const NO_STREAM_PAGES = new Set(["login", "setup", "denied"]);
const SIGN_IN_PAGES = new Set(["login", "setup"]);

/** Build an element: h("a", {href, class}, child, "text", [more]). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

/** An icon from the inline sprite (web/templates/_sprite.html). */
function icon(name, cls = "") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", cls ? `icon ${cls}` : "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

const debounce = (fn, ms) => {
  let timer = 0;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
};

/** Run at most once per `ms`, and always once more after the last call (trailing edge). */
const throttle = (fn, ms) => {
  let last = 0, timer = 0;
  return () => {
    const wait = last + ms - Date.now();
    if (timer) return;
    timer = setTimeout(() => { timer = 0; last = Date.now(); fn(); }, Math.max(0, wait));
  };
};

const setText = (el, text) => { if (el && el.textContent !== text) el.textContent = text; };
const capitalize = (text) => (text ? text[0].toUpperCase() + text.slice(1) : "");
const byData = (root, name, value) => root.querySelector(`[data-${name}="${CSS.escape(value)}"]`);
const templateName = (slug) => (APP.templates || {})[slug] || slug;

// ------------------------------------------------------------------------------ formatting
// The same wording as the Jinja filters in dragonfly/panel/__init__.py.

const fmt = {
  bytes(value) { // decimal, like disks and downloads
    if (value == null) return "—";
    let size = Number(value);
    for (const unit of ["B", "KB", "MB", "GB", "TB", "PB"]) {
      if (Math.abs(size) < 1000 || unit === "PB") return unit === "B" ? `${size.toFixed(0)} B` : `${size.toFixed(1)} ${unit}`;
      size /= 1000;
    }
    return "—";
  },
  ibytes(value) { // binary, like memory
    if (!value) return "—";
    let size = Number(value);
    for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
      if (Math.abs(size) < 1024 || unit === "TiB") return Number.isInteger(size) ? `${size} ${unit}` : `${size.toFixed(1)} ${unit}`;
      size /= 1024;
    }
    return "—";
  },
  eta(seconds) {
    if (seconds == null) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  },
  ago(ts) {
    if (!ts) return "never";
    const d = Math.max(0, Date.now() / 1000 - ts);
    if (d < 45) return d < 5 ? "just now" : `${Math.floor(d)} s ago`;
    if (d < 3600) return `${Math.round(d / 60)} min ago`;
    if (d < 86400) return `${Math.round(d / 3600)} h ago`;
    return `${Math.round(d / 86400)} d ago`;
  },
  iso: (ts) => (ts ? new Date(ts * 1000).toISOString().replace(/\.\d+Z$/, "Z") : ""),
  pct: (v) => `${Math.round(v)}%`,
};

/** Relative times are refreshed when the stream delivers something, not on a timer. */
const refreshTimes = throttle(() => {
  for (const t of $$("time[data-ts]")) setText(t, fmt.ago(Number(t.dataset.ts)));
}, 5000);

// ------------------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(message, detail, status) { super(message); this.detail = detail; this.status = status; }
}

/** JSON in, JSON out; a non-2xx answer becomes an ApiError carrying the API's {error, detail}. */
async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content; // once logins exist
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(url, init); } catch (err) {
    throw new ApiError("Cannot reach Dragonfly", "The server did not answer; is it still running?", 0);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(data?.error || `${res.status} ${res.statusText}`, data?.detail, res.status);
    if (res.status === 401 && !SIGN_IN_PAGES.has(PAGE_NAME)) {
      // The session ended (or never was): sign in, then come back here.
      err.shown = true;
      goToLogin();
    } else if (res.status === 423) {
      // Safety mode or a node lock refused it: the server's text says which and why.
      err.shown = true;
      toast(err.detail?.safety ? "Safety mode is on" : "This machine is locked", err.message, "error", "lock");
    }
    throw err;
  }
  return data;
}

function goToLogin() {
  const here = location.pathname + location.search;
  // Readable like the server's own redirects ("/" "?" "=" kept); "&" stays escaped so the
  // whole query comes back.
  const next = encodeURIComponent(here).replace(/%2F/g, "/").replace(/%3F/g, "?").replace(/%3D/g, "=");
  location.assign(`/login?next=${next}`);
}

const detailText = (detail) => {
  if (detail == null || detail === "") return "";
  if (typeof detail !== "object") return String(detail);
  return Object.entries(detail).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
};

// ------------------------------------------------------------------------------ toasts

function toast(title, text = "", kind = "ok", iconName = "") {
  const box = $("#toasts");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    icon(iconName || (kind === "error" ? "alert-circle" : "check-circle")),
    h("div", { class: "toast-body" }, h("p", { class: "toast-title" }, title), text ? h("p", { class: "toast-text" }, text) : null),
    h("button", { type: "button", class: "icon-btn", "aria-label": "Dismiss", onclick: () => dismiss() }, icon("x")));
  const dismiss = () => { item.classList.add("leaving"); setTimeout(() => item.remove(), 220); };
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(dismiss, kind === "error" ? 9000 : 4500);
}

/** An API error as a toast, unless api() already showed it (423) or is leaving the page (401). */
const showError = (err, what = "") => {
  if (!err.shown) toast(what ? `${what}: ${err.message}` : err.message, detailText(err.detail), "error");
};

// ------------------------------------------------------------------------------ theme

const THEME_KEY = "dragonfly-theme";

function initTheme() {
  const root = document.documentElement;
  const button = $("#theme-toggle");
  const stored = () => { try { return localStorage.getItem(THEME_KEY); } catch { return null; } };
  const apply = (theme) => {
    root.dataset.theme = theme;
    button?.setAttribute("aria-label", theme === "dark" ? "Switch to light theme" : "Switch to dark theme");
  };
  apply(root.dataset.theme === "light" ? "light" : "dark");
  button?.addEventListener("click", () => {
    const next = root.dataset.theme === "dark" ? "light" : "dark";
    try { localStorage.setItem(THEME_KEY, next); } catch { /* private mode: this page only */ }
    apply(next);
  });
  // Until the user picks a theme, follow the system's.
  window.matchMedia?.("(prefers-color-scheme: light)").addEventListener?.("change", (e) => {
    if (!stored()) apply(e.matches ? "light" : "dark");
  });
}

// ------------------------------------------------------------------------------ dialogs

/** Native <dialog>: Escape and focus containment come free; we add backdrop clicks and focus return. */
function showDialog(dialog, opener) {
  dialog._opener = opener || document.activeElement;
  if (!dialog._wired) {
    dialog._wired = true;
    dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
    dialog.addEventListener("close", () => dialog._opener?.focus?.());
  }
  dialog.showModal();
}

function initDialogs() {
  document.addEventListener("click", (e) => {
    const opener = e.target.closest("[data-open]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.open);
      if (!dialog) return;
      const current = opener.closest("dialog");
      const returnTo = current?._opener || opener;
      if (current) { current._opener = null; current.close(); }
      showDialog(dialog, returnTo);
      return;
    }
    const closer = e.target.closest("[data-close]");
    if (closer) closer.closest("dialog")?.close();
    const copier = e.target.closest("[data-copy]");
    if (copier) copyFrom(copier);
  });
}

/**
 * A dialog built on demand: a title, a body, and a confirm button that runs `onConfirm`.
 * `requireText` makes the operator type it (the machine's name) before confirming.
 * Errors from onConfirm go inline when `inlineErrors`, else the dialog closes and a toast says why.
 */
function modal({ title, iconName = "info", body = [], confirmLabel = "Confirm", danger = false,
                 requireText = "", inlineErrors = false, onConfirm }) {
  const id = `modal-${Math.random().toString(36).slice(2, 8)}`;
  const error = h("p", { class: "field-error", role: "alert", hidden: true });
  const typed = requireText ? h("input", { id: `${id}-type`, autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-hint` }) : null;
  const confirm = h("button", { type: "submit", class: `btn ${danger ? "btn-danger-solid" : "btn-primary"}`, disabled: !!requireText }, confirmLabel);
  const form = h("form", { class: "dialog-card", novalidate: true },
    h("header", { class: "dialog-head" },
      h("h2", { id: `${id}-title` }, icon(iconName), title),
      h("button", { type: "button", class: "icon-btn", "aria-label": "Close", "data-close": "" }, icon("x"))),
    h("div", { class: "dialog-body" }, body,
      typed ? h("div", { class: "field" },
        h("label", { for: typed.id }, "Type ", h("span", { class: "confirm-name" }, requireText), " to confirm"),
        typed, h("p", { class: "help", id: `${id}-hint` }, "This cannot be undone.")) : null,
      error),
    h("footer", { class: "dialog-foot" },
      h("button", { type: "button", class: "btn btn-ghost", "data-close": "" }, "Cancel"), confirm));
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": `${id}-title` }, form);
  typed?.addEventListener("input", () => { confirm.disabled = typed.value.trim() !== requireText; });
  return new Promise((resolve) => {
    let result = null;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (typed && typed.value.trim() !== requireText) { typed.focus(); return; }
      confirm.disabled = true;
      confirm.setAttribute("aria-busy", "true");
      try {
        result = await onConfirm(form);
        dialog.close();
      } catch (err) {
        if (inlineErrors) {
          error.textContent = err.detail ? `${err.message} (${detailText(err.detail)})` : err.message;
          error.hidden = false;
          confirm.disabled = false;
        } else {
          dialog.close();
          showError(err);
        }
      } finally {
        confirm.removeAttribute("aria-busy");
      }
    });
    dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
    document.body.append(dialog);
    showDialog(dialog, document.activeElement);
    (typed || form.querySelector("input, select") || confirm).focus();
  });
}

async function copyText(text, near) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall through */ }
  }
  // Plain-HTTP panels have no async clipboard: copy through a selected textarea. It goes next to
  // the button so it is inside an open modal dialog (everything outside one is inert).
  const area = h("textarea", { readonly: true, style: "position:fixed;top:0;left:0;opacity:0" });
  area.value = text;
  near.after(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  area.remove();
  near.focus();
  return ok;
}

async function copyFrom(button) {
  const source = $(button.dataset.copy);
  if (!source) return;
  const ok = await copyText(source.textContent.trim(), button);
  const label = button.querySelector("span");
  if (label) {
    setText(label, ok ? "Copied" : "Press Ctrl+C");
    if (!ok) window.getSelection()?.selectAllChildren(source);
    setTimeout(() => setText(label, "Copy"), 1800);
  }
}

/** Advanced Setup: compose the install command from the chosen options as they change. */
function initSetup() {
  const form = $("#adv-form");
  const out = $("#adv-command");
  if (!form || !out) return;
  const error = $("#adv-error");
  const update = () => {
    const parts = [out.dataset.base];
    const problems = [];
    const mode = form.elements.mode.value;
    const dhcp = form.elements.dhcp.value;
    const iface = form.elements.interface.value.trim();
    const port = form.elements.port.value.trim();
    if (mode && mode !== out.dataset.defaultMode) parts.push("--mode", mode);
    // Linux interface names: 1-15 characters, no slash or whitespace.
    const ifaceOk = !iface || (/^[A-Za-z0-9_.:@-]{1,15}$/.test(iface) && iface !== "." && iface !== "..");
    if (!ifaceOk) problems.push("An interface name has 1–15 letters, digits or . _ - : @ (like eno1).");
    else if (iface) parts.push("--interface", iface);
    if (dhcp && dhcp !== out.dataset.defaultDhcp) parts.push("--dhcp-mode", dhcp);
    const portNumber = Number(port);
    const portOk = !port || (Number.isInteger(portNumber) && portNumber >= 1 && portNumber <= 65535);
    if (!portOk) problems.push("The port is a whole number from 1 to 65535.");
    else if (port && String(portNumber) !== out.dataset.defaultPort) parts.push("--port", String(portNumber));
    if (form.elements.dry_run.checked) parts.push("--dry-run");
    // A class, not :has(:checked), which Chromium restyles late after a keyboard or script change.
    for (const radio of form.querySelectorAll('input[type="radio"]')) radio.closest(".option")?.classList.toggle("is-checked", radio.checked);
    setText(out, parts.join(" "));
    form.elements.interface.setAttribute("aria-invalid", String(!ifaceOk));
    form.elements.port.setAttribute("aria-invalid", String(!portOk));
    error.hidden = problems.length === 0;
    setText(error, problems.join(" "));
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", (e) => e.preventDefault());
  update();
}

// ------------------------------------------------------------------------------ live stream

/** One EventSource per tab; pages subscribe with live.on(kind, fn). */
const STREAM_KINDS = ["machine", "workflow", "history", "lock", "safety", "boot", "boot_edge"];
const live = {
  handlers: {},
  dropped: false,  // the stream broke (or the server said it fell behind): events were missed
  failures: 0,     // consecutive times the browser gave up on the stream
  on(kind, fn) { (this.handlers[kind] ||= []).push(fn); },
  emit(kind, message) {
    for (const fn of this.handlers[kind] || []) {
      try { fn(message); } catch (err) { console.error(`live ${kind} handler failed`, err); }
    }
  },
  status(state, label) {
    const el = $("#live");
    if (!el) return;
    el.dataset.status = state;
    setText(el.querySelector(".live-text"), label);
    el.title = `Live updates: ${label.toLowerCase()}`;
  },
  start() {
    if (NO_STREAM_PAGES.has(PAGE_NAME) || !CAN.read) {
      const el = $("#live");
      if (el) el.hidden = true;
      return;
    }
    if (!("EventSource" in window)) { this.status("offline", "No live updates"); return; }
    this.connect();
  },
  connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("hello", () => {
      this.status("live", "Live");
      this.failures = 0;
      // The server does not replay what was missed (it ignores Last-Event-ID), so pages load
      // their data again, now that the new stream already collects changes. At most once per
      // 5 s, however often the connection flaps.
      if (this.dropped) { this.dropped = false; this.resync(); }
    });
    for (const kind of STREAM_KINDS) {
      source.addEventListener(kind, (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        this.emit(kind, message);
        refreshTimes();
      });
    }
    // This stream fell behind; the server closes it and the browser reconnects: reload then.
    source.addEventListener("resync", () => { this.dropped = true; });
    source.onerror = () => {
      this.dropped = true;
      if (source.readyState !== EventSource.CLOSED) { this.status("reconnecting", "Reconnecting"); return; }
      // The browser gave up (the server refused the stream or is gone): back off, then check
      // whether we may still read before trying again.
      source.close();
      this.status("offline", "Offline");
      this.retryLater();
    };
  },
  retryLater() {
    this.failures += 1;
    setTimeout(() => this.recover(), Math.min(60, 2.5 * 2 ** this.failures) * 1000); // 5 s … 60 s
  },
  async recover() {
    try {
      const session = await api("GET", "/api/auth/session");
      if (session?.user?.can && !session.user.can.read) { goToLogin(); return; }
    } catch (err) {
      if (err.status === 0) { this.retryLater(); return; } // still unreachable
    }
    this.status("reconnecting", "Reconnecting");
    this.connect();
  },
};
live.resync = throttle(() => live.emit("resync", {}), 5000);

// ------------------------------------------------------------------------------ shared components
// Mirrors of the macros in web/templates/_ui.html.

function badge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, h("span", { class: "dot", "aria-hidden": "true" }), state);
}

function when(ts) {
  if (!ts) return h("span", { class: "faint" }, "never");
  return h("time", { datetime: fmt.iso(ts), "data-ts": ts, title: fmt.iso(ts) }, fmt.ago(ts));
}

function progressBar(value, label, state = "running") {
  const bar = h("div", { class: "progress", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
    h("div", { class: "progress-fill" }));
  setProgress(bar, value, state);
  return bar;
}

function setProgress(bar, value, state) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  bar.setAttribute("aria-valuenow", String(Math.round(v * 10) / 10));
  bar.firstElementChild.style.width = `${v}%`;
  bar.classList.toggle("running", state === "running");
  bar.classList.toggle("failed", state === "failed");
  bar.classList.toggle("done", state === "succeeded");
}

function empty(iconName, title, text = "") {
  return h("div", { class: "empty" }, icon(iconName, "empty-icon"), h("p", { class: "empty-title" }, title), text ? h("p", { class: "muted" }, text) : null);
}

const bump = (el) => {
  el.classList.remove("bump");
  void el.offsetWidth; // restart the animation
  el.classList.add("bump");
};

// ------------------------------------------------------------------------------ locks and safety mode

const lockTitle = (lock) => `Locked by ${lock.by || "someone"}${lock.reason ? `: ${lock.reason}` : ""}`;

/** The small lock after a machine's name in lists (macro lock_mark in _ui.html). */
function lockMark(lock) {
  return h("span", { class: "lock-mark", role: "img", "aria-label": "locked", title: lockTitle(lock) }, icon("lock"));
}

/** Put `lock`'s mark right after `anchor` (or take it away when unlocked). */
function setLockMark(anchor, lock) {
  if (!anchor) return;
  const next = anchor.nextElementSibling?.classList.contains("lock-mark") ? anchor.nextElementSibling
    : anchor.querySelector(":scope > .lock-mark");
  if (!lock) { next?.remove(); return; }
  if (next) next.title = lockTitle(lock);
  else if (anchor.matches(".recent-name")) anchor.append(lockMark(lock));
  else anchor.after(lockMark(lock));
}

/** Safety mode as the page knows it; the banner and the machine page's buttons follow it live. */
const SAFETY = {
  state: APP.safety || { enabled: false },
  listeners: [],
  on(fn) { this.listeners.push(fn); },
  set(state) {
    const was = this.state?.enabled;
    this.state = state || { enabled: false };
    renderSafetyBanner(this.state, !was && this.state.enabled);
    for (const fn of this.listeners) fn(this.state);
  },
};

function renderSafetyBanner(state, appeared) {
  const banner = $("#safety-banner");
  if (!banner) return;
  banner.hidden = !state.enabled;
  if (!state.enabled) return;
  const parts = [state.reason ? `Reason: ${state.reason}` : "No reason given"];
  if (state.by) parts.push(` · turned on by ${state.by}`);
  $('[data-field="safety-reason"]', banner).replaceChildren(...parts,
    ...(state.since ? [", ", when(state.since)] : []), ".");
  if (appeared) { banner.classList.remove("flash-in"); void banner.offsetWidth; banner.classList.add("flash-in"); }
}

/** Why destructive buttons are off right now ("" when they are not): the same words as machine.html. */
function guardReason(lock) {
  const safety = SAFETY.state;
  if (safety?.enabled) return `Safety mode is on: reimage, delete and power actions are disabled${safety.reason ? ` (${safety.reason})` : ""}.`;
  if (lock) return `${lockTitle(lock)}. Unlock it first.`;
  return "";
}

function initSafety() {
  live.on("safety", ({ op, data }) => SAFETY.set(op === "delete" || !data ? { enabled: false } : data));
  live.on("resync", async () => {
    try { SAFETY.set(await api("GET", "/api/safety")); } catch { /* keep what we have */ }
  });
}

// ------------------------------------------------------------------------------ account menu

function initAccountMenu() {
  const menu = $("#account-menu");
  if (!menu) return;
  const summary = menu.querySelector("summary");
  const close = (focus) => { menu.open = false; if (focus) summary.focus(); };
  document.addEventListener("click", (e) => { if (menu.open && !menu.contains(e.target)) close(false); });
  document.addEventListener("focusin", (e) => { if (menu.open && !menu.contains(e.target)) close(false); });
  menu.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && menu.open) { e.preventDefault(); close(true); return; }
    if (!menu.open || (e.key !== "ArrowDown" && e.key !== "ArrowUp")) return;
    const items = $$(".menu-item, .role-option", menu);
    const at = items.indexOf(document.activeElement);
    const down = e.key === "ArrowDown";
    e.preventDefault();
    items[at < 0 ? (down ? 0 : items.length - 1) : (at + (down ? 1 : items.length - 1)) % items.length]?.focus();
  });

  menu.querySelector("[data-logout]")?.addEventListener("click", async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await api("POST", "/api/auth/logout");
    } catch (err) {
      button.disabled = false;
      showError(err, "Cannot sign out");
      return;
    }
    location.assign("/login");
  });

  // The demo's role switcher: a cookie on the server side; reload to see the panel as that role.
  for (const option of $$("[data-demo-role]", menu)) {
    option.addEventListener("click", async () => {
      if (option.getAttribute("aria-pressed") === "true") { close(true); return; }
      option.setAttribute("aria-busy", "true");
      try {
        await api("POST", "/api/demo/role", { role: option.dataset.demoRole });
      } catch (err) {
        option.removeAttribute("aria-busy");
        showError(err, "Cannot switch roles");
        return;
      }
      // Account and admin pages are not for every role: land on the dashboard from those.
      if (/^\/(account|admin)(\/|$)/.test(location.pathname)) location.assign("/");
      else location.reload();
    });
  }
}

// ------------------------------------------------------------------------------ boot doctor
// Timelines per MAC from dragonfly/bootlog.py: {mac, steps: [{at, last_at, step, label, count,
// detail}], diagnosis}. The machine page draws a machine's, the dashboard the newest MACs.

const ARCH_NAMES = { 0: "BIOS", 6: "x86 UEFI", 7: "x86-64 UEFI", 9: "x86-64 UEFI", 10: "ARM32 UEFI",
  11: "ARM64 UEFI", 15: "x86 UEFI HTTP", 16: "x86-64 UEFI HTTP", 19: "ARM64 UEFI HTTP" };
const ERROR_STEPS = new Set(["tftp_error", "dhcp_ignored", "dhcp_nak", "dhcp_decline"]);
const DONE_STEPS = new Set(["checkin", "heartbeat"]);
// What should have come next, for the "never happened" line under a stalled chain.
const NEXT_STEP = {
  dhcp_discover: "An offer from Dragonfly", dhcp_request: "A DHCP acknowledgement",
  dhcp_offer: "The loader download", dhcp_ack: "The loader download", tftp: "The iPXE script request",
  http_loader: "The iPXE script request", ipxe_script: "The discovery kernel download",
  kernel: "The initrd download", initrd: "The agent's check-in",
};
const BOOT_EXPECT = PAGE.boot_expect || {};
const SERVER_SKEW = PAGE.now ? PAGE.now - Date.now() / 1000 : 0; // server clock minus ours, s

const lastStep = (timeline) => timeline.steps[timeline.steps.length - 1];
const mono = (text) => h("span", { class: "mono" }, text);
const seconds = (s) => (s < 10 ? `${Number(s).toFixed(1)} s` : fmt.eta(s));

/** The few details worth a glance, per step: loader and why, file, size and time, ... */
function bootFacts(step) {
  const d = step.detail || {};
  const facts = [];
  const file = d.file || d.filename;
  const size = d.bytes ?? d.bytes_sent ?? d.size;
  const took = d.seconds ?? d.duration;
  switch (step.step) {
    case "dhcp_discover": {
      const arch = d.arch_name || ARCH_NAMES[d.arch] || (d.arch != null ? `arch ${d.arch}` : "");
      if (arch) facts.push(arch);
      if (d.ipxe) facts.push("iPXE");
      else if (d.vendor_class && !arch) facts.push(mono(d.vendor_class));
      if (d.relay) facts.push(`via relay ${d.relay}`);
      break;
    }
    case "dhcp_offer": case "dhcp_ack":
      if (d.script) facts.push("its iPXE script");
      else if (d.loader || d.boot_file) facts.push(mono(d.loader || d.boot_file));
      if (d.reason) facts.push(d.reason);
      if (d.yiaddr || d.ip) facts.push(`address ${d.yiaddr || d.ip}`);
      break;
    case "dhcp_request":
      if (d.ip) facts.push(`for ${d.ip}`);
      if (d.ours === false) facts.push("to another server");
      break;
    case "tftp_error":
      if (file) facts.push(mono(file));
      if (d.error) facts.push(d.error);
      break;
    case "ipxe_script":
      if (d.target) facts.push(`boots ${d.target}`);
      else if ("state" in d) facts.push(d.state ? `a ${d.state} machine` : "a new machine: discovery");
      if (d.ip) facts.push(`from ${d.ip}`);
      break;
    case "checkin": case "heartbeat":
      if (d.state) facts.push(d.state);
      if (d.action) facts.push(`told to ${d.action.replace(/_/g, " ")}`);
      if (d.ip) facts.push(`from ${d.ip}`);
      break;
    default:
      if (d.reason) facts.push(d.reason);
  }
  if (["tftp", "http_loader", "kernel", "initrd"].includes(step.step)) {
    if (file || d.loader) facts.push(mono(file || d.loader));
    if (size != null) facts.push(fmt.bytes(size));
    if (took != null) facts.push(`in ${seconds(took)}`);
    if (d.outcome && d.outcome !== "complete") facts.push(d.outcome.replace(/_/g, " "));
  }
  return facts.flatMap((f, i) => (i ? [" · ", f] : [f]));
}

function stepTone(step, isLast, diagnosis) {
  if (ERROR_STEPS.has(step.step)) return "error";
  if (DONE_STEPS.has(step.step)) return "done";
  if (isLast && diagnosis) return "stopped";
  return "ok";
}

/**
 * The boot doctor diagnoses a stall once time has passed without a next step; nothing is
 * written then, so no event tells us. Ask again (once) when the earliest one may be due.
 */
function bootDeadlines(refetch) {
  let timer = 0;
  const asked = new Set(); // "mac|step|last_at" already checked once
  return (timelines) => {
    clearTimeout(timer);
    let due = Infinity;
    const keys = [];
    for (const t of timelines) {
      const last = t.steps.length ? lastStep(t) : null;
      const within = last && !t.diagnosis ? BOOT_EXPECT[last.step] : undefined;
      if (within == null) continue;
      const key = `${t.mac}|${last.step}|${last.last_at}`;
      if (asked.has(key)) continue;
      const since = last.step === "dhcp_discover" ? last.at : last.last_at;
      const at = (since + within + 1 - SERVER_SKEW) * 1000;
      keys.push([key, at]);
      due = Math.min(due, at);
    }
    if (due === Infinity) return;
    timer = setTimeout(() => {
      for (const [key, at] of keys) if (at <= Date.now() + 50) asked.add(key);
      refetch();
    }, Math.max(0, due - Date.now()));
  };
}

// ------------------------------------------------------------------------------ dashboard

function initDashboard() {
  const list = $("#deployments");
  const names = { ...(PAGE.names || {}) };
  const locks = new Map(Object.entries(PAGE.locks || {}));
  const finishing = new Set();

  const deployItem = (wf) => {
    const name = names[wf.machine_id] || wf.machine_id;
    return h("li", { class: "deploy", "data-wf": wf.id, "data-machine": wf.machine_id },
      h("div", { class: "deploy-head" },
        h("a", { class: "deploy-name", href: `/machines/${encodeURIComponent(wf.machine_id)}` }, name),
        h("span", { class: "deploy-os" }, templateName(wf.template)),
        h("span", { class: `engine engine-${wf.engine}` }, wf.engine),
        h("span", { class: "deploy-pct num", "data-field": "pct" }, fmt.pct(wf.progress))),
      progressBar(wf.progress, `Deployment of ${name}`, wf.state),
      h("div", { class: "deploy-meta" },
        h("span", { "data-field": "stage" }, wf.stage || wf.state),
        h("span", { "data-field": "bytes" }, `${fmt.bytes(wf.bytes_done)} / ${fmt.bytes(wf.bytes_total)}`),
        h("span", { "data-field": "eta" }, `ETA ${fmt.eta(wf.eta_seconds)}`)));
  };

  const updateItem = (li, wf) => {
    setText(byData(li, "field", "pct"), fmt.pct(wf.progress));
    setText(byData(li, "field", "stage"), wf.state === "failed" ? `failed at ${wf.stage}` : wf.state === "succeeded" ? "done" : (wf.stage || wf.state));
    setText(byData(li, "field", "bytes"), `${fmt.bytes(wf.bytes_done)} / ${fmt.bytes(wf.bytes_total)}`);
    setText(byData(li, "field", "eta"), wf.state === "running" ? `ETA ${fmt.eta(wf.eta_seconds)}` : wf.state);
    setProgress(li.querySelector(".progress"), wf.progress, wf.state);
  };

  const sync = () => {
    const active = $$(".deploy", list).filter((li) => !finishing.has(li.dataset.wf)).length;
    setText($('[data-field="active-count"]'), String(active));
    $(".deploy-empty").hidden = list.children.length > 0;
  };

  // Finished deployments stay a moment, tinted, then fade out.
  const finish = (li, wf) => {
    if (finishing.has(wf.id)) return;
    finishing.add(wf.id);
    li.classList.add(wf.state === "succeeded" ? "is-done" : "is-failed");
    setTimeout(() => {
      li.classList.add("leaving");
      setTimeout(() => { li.remove(); finishing.delete(wf.id); sync(); }, 450);
    }, 3000);
  };

  const nameFor = async (li, machineId, known) => {
    if (known) names[machineId] = known;
    if (names[machineId]) {
      setText(li.querySelector(".deploy-name"), names[machineId]);
      li.querySelector(".progress").setAttribute("aria-label", `Deployment of ${names[machineId]}`);
      return;
    }
    try {
      const m = await api("GET", `/api/machines/${encodeURIComponent(machineId)}`);
      names[machineId] = m.name;
      setText(li.querySelector(".deploy-name"), m.name);
      li.querySelector(".progress").setAttribute("aria-label", `Deployment of ${m.name}`);
    } catch { /* keep the id */ }
  };

  live.on("workflow", ({ op, id, data }) => {
    let li = byData(list, "wf", id);
    if (op === "delete" || !data) { li?.remove(); sync(); return; }
    const active = data.state === "running" || data.state === "pending";
    if (!li && active) {
      li = deployItem(data);
      list.append(li);
      nameFor(li, data.machine_id, data.machine_name);
    } else if (li) {
      updateItem(li, data);
      if (!active) finish(li, data);
    }
    sync();
  });

  const renderStats = (stats) => {
    setText($('[data-field="total"]'), String(stats.total));
    $("#fleet-bar").classList.toggle("is-empty", stats.total === 0);
    for (const [state, count] of Object.entries(stats.states)) {
      const el = byData(document, "count", state);
      if (el && el.textContent !== String(count)) { el.textContent = String(count); bump(el); }
      setText(byData(document, "share", state), String(stats.total ? Math.round(100 * count / stats.total) : 0));
      const seg = $(`.fleet-seg[data-state="${CSS.escape(state)}"]`);
      if (seg) seg.style.flexGrow = String(count);
    }
    const recent = $("#recent");
    recent.replaceChildren(...(stats.recently_seen.length ? stats.recently_seen.map((m) =>
      h("li", { class: "recent", "data-id": m.id },
        h("a", { class: "recent-name", href: `/machines/${encodeURIComponent(m.id)}` }, m.name, locks.has(m.id) ? lockMark(locks.get(m.id)) : null),
        badge(m.state),
        h("span", { class: "recent-ip mono muted" }, m.ip || "—"),
        h("span", { class: "recent-seen" }, when(m.last_seen)))) : [h("li", {}, empty("inbox", "No machine has checked in yet"))]));
    // Reconcile deployments with the server's view (covers events missed while offline).
    const activeIds = new Set(stats.active_workflows.map((w) => w.id));
    for (const li of $$(".deploy", list)) if (!activeIds.has(li.dataset.wf) && !finishing.has(li.dataset.wf)) li.remove();
    for (const wf of stats.active_workflows) {
      const li = byData(list, "wf", wf.id);
      if (li) updateItem(li, wf); else { const item = deployItem(wf); list.append(item); nameFor(item, wf.machine_id); }
    }
    sync();
  };

  const refresh = throttle(async () => {
    try { renderStats(await api("GET", "/api/stats")); } catch (err) { showError(err, "Cannot refresh the dashboard"); }
  }, 1000);

  live.on("machine", ({ op, data }) => {
    if (op === "put" && data) names[data.id] = data.name;
    refresh();
  });
  live.on("lock", ({ op, id, data }) => {
    if (op === "delete" || !data) locks.delete(id); else locks.set(id, data);
    setLockMark($(`#recent [data-id="${CSS.escape(id)}"] .recent-name`), locks.get(id));
  });
  live.on("resync", async () => {
    try {
      const all = await api("GET", "/api/locks");
      locks.clear();
      for (const lock of all) locks.set(lock.machine, lock);
    } catch { /* keep the marks we have */ }
    refresh();
  });
  initBootCard();
  initBootEdge();
}

/** The boot edge's banners: DHCP/TFTP failed to start (with the reason), discovery lacking
 * files. The server says when the edge changes ("boot_edge" events); the details are asked. */
function initBootEdge() {
  const banner = $("#boot-edge-banner");
  const missingBox = $("#discovery-missing");
  if (!banner) return;
  const render = (status) => {
    const failed = status?.state === "failed";
    banner.hidden = !failed;
    setText(byData(banner, "field", "boot-edge-reason"), failed ? status.reason || "" : "");
    const disc = status?.discovery || {};
    const missing = [...(disc.missing || []), ...(disc.loaders_missing || [])];
    if (missingBox) {
      missingBox.hidden = failed || !missing.length;
      setText(byData(missingBox, "field", "discovery-missing"), missing.join(", "));
    }
  };
  const reload = async () => {
    try { render(await api("GET", "/api/boot/status")); } catch { /* keep what we show */ }
  };
  live.on("boot_edge", reload);
  live.on("resync", reload);
}

/** Boot activity: the newest MACs the boot doctor saw, each with its last step and diagnosis. */
function initBootCard() {
  const list = $("#boot-list");
  if (!list) return;
  const limit = PAGE.boot_rows || 8;
  let rows = (PAGE.boot || []).map((r) => ({ mac: r.mac, steps: r.steps, diagnosis: r.diagnosis }));
  // MAC -> {id, name} of its machine, or null: a MAC that boots but never registered.
  const owners = new Map((PAGE.boot || []).map((r) => [r.mac, r.machine]));
  const looking = new Set();
  const fresh = new Set();

  const owner = async (row) => {
    if (owners.has(row.mac) || looking.has(row.mac)) return;
    looking.add(row.mac);
    const id = row.steps.map((st) => st.detail?.machine_id).find(Boolean);
    try {
      if (id) {
        const m = await api("GET", `/api/machines/${encodeURIComponent(id)}`);
        owners.set(row.mac, { id: m.id, name: m.name });
      } else {
        const found = await api("GET", `/api/machines?q=${encodeURIComponent(row.mac)}&limit=2`);
        owners.set(row.mac, found.items.length === 1 ? { id: found.items[0].id, name: found.items[0].name } : null);
      }
    } catch {
      owners.set(row.mac, null);
    } finally {
      looking.delete(row.mac);
    }
    draw();
  };

  const rowEl = (row) => {
    const last = lastStep(row);
    const who = owners.get(row.mac);
    const facts = bootFacts(last);
    return h("li", { class: `boot-row${row.diagnosis ? " is-stopped" : ""}${fresh.has(row.mac) ? " new" : ""}`, "data-mac": row.mac },
      h("span", { class: `bdot tone-${stepTone(last, true, row.diagnosis)}`, "aria-hidden": "true" }),
      h("div", { class: "boot-main" },
        h("div", { class: "boot-who" },
          who ? h("a", { class: "boot-name", href: `/machines/${encodeURIComponent(who.id)}` }, who.name)
            : who === null ? h("span", { class: "boot-unknown", title: "This MAC boots but no machine with it has registered" }, "unknown machine") : null,
          h("span", { class: "boot-mac mono" }, row.mac)),
        h("div", { class: "boot-last" }, h("span", { class: "boot-step" }, last.label),
          last.count > 1 ? ` ×${last.count}` : "", facts.length ? [" · ", ...facts] : null)),
      h("span", { class: "boot-when" }, when(last.last_at || last.at)),
      row.diagnosis ? h("p", { class: "boot-diag" }, icon("alert"), h("span", {}, capitalize(row.diagnosis))) : null);
  };

  const draw = () => {
    // Newest first by the time of each MAC's last step (events arrive in batches, unordered).
    rows.sort((a, b) => (lastStep(b).last_at || 0) - (lastStep(a).last_at || 0));
    list.replaceChildren(...rows.slice(0, limit).map(rowEl));
    fresh.clear();
    $(".boot-empty").hidden = rows.length > 0;
    const stopped = rows.slice(0, limit).filter((r) => r.diagnosis).length;
    const pill = $('[data-field="boot-stopped"]');
    pill.hidden = stopped === 0;
    setText(pill, `${stopped} stopped`);
    for (const row of rows.slice(0, limit)) if (!owners.has(row.mac)) owner(row);
  };

  const reload = async () => {
    try {
      const latest = await api("GET", `/api/boot?limit=${limit}`);
      rows = latest.map((r) => ({ mac: r.mac, steps: r.steps, diagnosis: r.diagnosis }));
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load boot activity"); // offline: the resync after reconnecting reloads
      return;
    }
    draw();
    deadlines(rows);
  };
  const deadlines = bootDeadlines(reload);

  live.on("boot", ({ op, id, data }) => {
    rows = rows.filter((r) => r.mac !== id);
    if (op !== "delete" && data?.steps?.length) {
      rows.push({ mac: data.mac, steps: data.steps.slice(-1), diagnosis: data.diagnosis });
      fresh.add(data.mac);
    }
    draw();
    rows = rows.slice(0, limit);
    deadlines(rows);
  });
  // A machine that registers turns its MAC's "unknown machine" into its name.
  live.on("machine", ({ op, data }) => {
    if (op !== "put" || !data) return;
    const had = owners.get(data.mac);
    owners.set(data.mac, { id: data.id, name: data.name });
    if (rows.some((r) => r.mac === data.mac) && (!had || had.name !== data.name)) draw();
  });
  live.on("resync", reload);
  draw();
  deadlines(rows);
}

// ------------------------------------------------------------------------------ machine list

function initMachines() {
  const tbody = $("#machine-rows");
  const query = { q: "", state: "", tag: "", sort: "name", order: "asc", ...(PAGE.query || {}) };
  const selected = new Set();
  // Locks are their own documents: API rows carry them, live machine events do not.
  const locks = new Map(Object.entries(PAGE.locks || {}));
  let total = PAGE.total || 0;
  let lastChecked = null; // index of the last row clicked, for shift-click ranges
  let seq = 0;            // only the newest request's answer is drawn

  const rowEl = (m) => {
    if (m.lock !== undefined) { if (m.lock) locks.set(m.id, m.lock); else locks.delete(m.id); }
    const lock = locks.get(m.id);
    const tr = h("tr", { "data-id": m.id, "data-state": m.state },
      h("td", { class: "col-check" }, h("input", { type: "checkbox", class: "row-check", "aria-label": `Select ${m.name}`, value: m.id })),
      h("td", { class: "col-name" },
        h("a", { class: "machine-link", href: `/machines/${encodeURIComponent(m.id)}` }, m.name),
        lock ? lockMark(lock) : null,
        h("div", { class: "row-tags" }, m.tags.map((t) => h("span", { class: "chip tag sm" }, t)))),
      h("td", { class: "col-state" }, badge(m.state)),
      h("td", { class: "col-ip mono" }, m.ip || "—"),
      h("td", { class: "col-mac mono" }, m.mac),
      h("td", { class: "col-vendor" }, h("span", { class: "vendor" }, m.vendor || "—"), " ", h("span", { class: "muted" }, m.product)),
      h("td", { class: "col-memory num" }, fmt.ibytes(m.memory_bytes)),
      h("td", { class: "col-cpus num" }, m.cpu_threads || "—"),
      h("td", { class: "col-seen" }, when(m.last_seen)));
    tr.querySelector(".row-check").checked = selected.has(m.id);
    tr.classList.toggle("selected", selected.has(m.id));
    return tr;
  };

  /** Update a row in place (keeps its checkbox, and so keyboard focus). */
  const updateRow = (tr, m) => {
    const fresh = rowEl(m);
    const changedState = tr.dataset.state !== m.state;
    tr.dataset.state = m.state;
    const nextCells = [...fresh.cells]; // copied: replaceWith moves cells out of `fresh`
    [...tr.cells].slice(1).forEach((cell, i) => {
      const next = nextCells[i + 1];
      if (cell.innerHTML !== next.innerHTML) cell.replaceWith(next);
    });
    if (changedState) { tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash"); }
  };

  const rows = () => [...tbody.rows];

  const params = () => {
    const p = new URLSearchParams();
    if (query.q) p.set("q", query.q);
    if (query.state) p.set("state", query.state);
    if (query.tag) p.set("tag", query.tag);
    if (query.sort !== "name") p.set("sort", query.sort);
    if (query.order !== "asc") p.set("order", query.order);
    return p;
  };

  const syncURL = () => {
    const qs = params().toString();
    history.replaceState(null, "", `/machines${qs ? `?${qs}` : ""}`);
  };

  const renderMeta = (states) => {
    if (states) {
      let all = 0;
      for (const s of APP.states || []) {
        const n = states[s] || 0;
        all += n;
        setText(byData($("#state-chips"), "count", s), String(n));
      }
      setText($('#state-chips [data-count=""]'), String(all));
    }
    setText($('[data-field="total"]'), String(total));
    setText($('[data-field="total-label"]'), (total === 1 ? "machine" : "machines") + (query.q || query.state || query.tag ? " match" : ""));
    const shown = tbody.rows.length;
    setText($('[data-field="showing"]'), `Showing ${shown.toLocaleString()} of ${total.toLocaleString()}`);
    $("#load-more").hidden = shown >= total;
    const filtered = Boolean(query.q || query.state || query.tag);
    $('.table-empty[data-kind="nomatch"]').hidden = shown > 0 || !filtered;
    $('.table-empty[data-kind="none"]').hidden = shown > 0 || filtered;
    syncSelection();
  };

  /** Fetch rows for the current query; `append` adds the next page after the loaded ones. */
  const load = async ({ append = false, limit = PAGE_SIZE } = {}) => {
    const mine = ++seq;
    const p = params();
    p.set("limit", String(limit));
    if (append) p.set("offset", String(tbody.rows.length));
    document.body.classList.add("loading");
    let data;
    try {
      data = await api("GET", `/api/machines?${p}`);
    } catch (err) {
      if (mine === seq) showError(err, "Cannot load machines");
      return;
    } finally {
      if (mine === seq) document.body.classList.remove("loading");
    }
    if (mine !== seq) return;
    total = data.total;
    if (append) {
      const have = new Set(rows().map((r) => r.dataset.id));
      tbody.append(...data.items.filter((m) => !have.has(m.id)).map(rowEl));
    } else {
      // Keyed update: reuse rows by id and move only what moved, so focus and selection survive.
      const byId = new Map(rows().map((r) => [r.dataset.id, r]));
      const wanted = data.items.map((m) => {
        const tr = byId.get(m.id);
        if (tr) { updateRow(tr, m); byId.delete(m.id); return tr; }
        return rowEl(m);
      });
      wanted.forEach((tr, i) => { if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null); });
      for (const tr of byId.values()) tr.remove();
    }
    renderMeta(data.states);
  };

  const reload = () => { syncURL(); lastChecked = null; load(); };

  // Search as you type, filters and sorting.
  const search = $("#q");
  search.addEventListener("input", debounce(() => { query.q = search.value.trim(); reload(); }, 200));
  $("#machine-filters").addEventListener("submit", (e) => { e.preventDefault(); query.q = search.value.trim(); reload(); });
  $("#tag-filter").addEventListener("change", (e) => { query.tag = e.target.value; reload(); });
  $("#state-chips").addEventListener("click", (e) => {
    const chip = e.target.closest(".chip-btn");
    if (!chip) return;
    query.state = chip.dataset.state;
    for (const c of $$(".chip-btn", e.currentTarget)) c.setAttribute("aria-pressed", String(c === chip));
    reload();
  });
  const DESC_FIRST = new Set(["memory", "cpus", "last_seen"]); // biggest / newest first
  $("#machine-table thead").addEventListener("click", (e) => {
    const button = e.target.closest(".th-sort");
    if (!button) return;
    const key = button.dataset.sort;
    if (query.sort === key) query.order = query.order === "asc" ? "desc" : "asc";
    else { query.sort = key; query.order = DESC_FIRST.has(key) ? "desc" : "asc"; }
    for (const th of $$("#machine-table thead th")) {
      const b = th.querySelector(".th-sort");
      if (!b) continue;
      const active = b.dataset.sort === query.sort;
      if (active) th.setAttribute("aria-sort", query.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      b.querySelector(".sort-icon").replaceWith(icon(active ? (query.order === "asc" ? "arrow-up" : "arrow-down") : "sort", "sort-icon"));
    }
    reload();
  });
  $("#load-more").addEventListener("click", () => load({ append: true }));

  // "/" jumps to the search box, as in most dashboards.
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && !e.target.closest("input, textarea, select, [contenteditable]") && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      search.focus();
    }
  });

  // Selection: checkboxes, shift-click ranges, select all visible.
  const selectAll = $("#select-all");
  const bulkbar = $("#bulkbar");
  function syncSelection() {
    const visible = rows();
    let on = 0;
    for (const tr of visible) {
      const checked = selected.has(tr.dataset.id);
      tr.querySelector(".row-check").checked = checked;
      tr.classList.toggle("selected", checked);
      if (checked) on += 1;
    }
    selectAll.checked = visible.length > 0 && on === visible.length;
    selectAll.indeterminate = on > 0 && on < visible.length;
    if (bulkbar) {
      bulkbar.hidden = selected.size === 0;
      setText(byData(bulkbar, "field", "selected"), String(selected.size));
    }
  }
  tbody.addEventListener("click", (e) => {
    const box = e.target.closest(".row-check");
    if (!box) return;
    const all = rows();
    const index = all.indexOf(box.closest("tr"));
    const range = e.shiftKey && lastChecked != null && lastChecked < all.length
      ? all.slice(Math.min(lastChecked, index), Math.max(lastChecked, index) + 1) : [all[index]];
    for (const tr of range) {
      if (box.checked) selected.add(tr.dataset.id); else selected.delete(tr.dataset.id);
    }
    lastChecked = index;
    syncSelection();
  });
  selectAll.addEventListener("change", () => {
    for (const tr of rows()) {
      if (selectAll.checked) selected.add(tr.dataset.id); else selected.delete(tr.dataset.id);
    }
    syncSelection();
  });

  // Bulk tagging.
  const bulkTag = $("#bulk-tag");
  bulkbar?.addEventListener("click", async (e) => {
    const button = e.target.closest("[data-bulk]");
    if (!button) return;
    const op = button.dataset.bulk;
    if (op === "clear") { selected.clear(); syncSelection(); return; }
    const tag = bulkTag.value.trim();
    if (!tag) { bulkTag.setAttribute("aria-invalid", "true"); bulkTag.focus(); toast("Type a tag first", "", "error"); return; }
    bulkTag.removeAttribute("aria-invalid");
    const ids = [...selected];
    button.disabled = true;
    try {
      const result = await api("POST", "/api/machines/bulk/tags", op === "add" ? { ids, add: [tag] } : { ids, remove: [tag] });
      for (const m of result.items) { const tr = byData(tbody, "id", m.id); if (tr) updateRow(tr, m); }
      toast(op === "add" ? `Tagged ${result.updated} machine${result.updated === 1 ? "" : "s"} “${tag}”`
        : `Removed “${tag}” from ${result.updated} machine${result.updated === 1 ? "" : "s"}`);
      bulkTag.value = "";
      refreshTags();
    } catch (err) {
      bulkTag.setAttribute("aria-invalid", "true");
      showError(err, "Bulk tagging failed");
    } finally {
      button.disabled = false;
    }
  });
  bulkTag?.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); bulkbar.querySelector('[data-bulk="add"]').click(); }
  });

  // The tag filter's options (and counts) follow tag edits.
  const refreshTags = throttle(async () => {
    let tags;
    try { tags = await api("GET", "/api/tags"); } catch { return; }
    const select = $("#tag-filter");
    const options = [h("option", { value: "" }, "All tags"), ...tags.map((t) => h("option", { value: t.name }, `${t.name} (${t.count})`))];
    if (query.tag && !tags.some((t) => t.name === query.tag)) options.push(h("option", { value: query.tag }, `${query.tag} (0)`));
    select.replaceChildren(...options);
    select.value = query.tag;
  }, 3000);

  // Live rows: update visible rows at once. Re-query (throttled) only when the event can change
  // which rows match or the counts: a machine never seen before, or one whose state or tags
  // changed. Heartbeats of machines off screen cost nothing, even in a 10,000-machine fleet.
  const requery = throttle(() => load({ limit: Math.max(PAGE_SIZE, tbody.rows.length) }), 1500);
  const known = new Map(); // id -> "state|tags" as last seen
  const key = (m) => `${m.state}|${m.tags.join(",")}`;
  live.on("machine", ({ op, id, data }) => {
    const tr = byData(tbody, "id", id);
    if (op === "delete" || !data) {
      known.delete(id);
      if (tr) { tr.remove(); selected.delete(id); }
      requery();
      return;
    }
    const before = known.get(id) ?? (tr ? `${tr.dataset.state}|${[...tr.querySelectorAll(".row-tags .chip")].map((c) => c.textContent).join(",")}` : undefined);
    known.set(id, key(data));
    if (tr) updateRow(tr, data);
    const changed = before !== key(data);
    if (changed || (!tr && query.sort === "last_seen")) requery();
    if (changed && before?.split("|")[1] !== data.tags.join(",")) refreshTags();
  });
  live.on("lock", ({ op, id, data }) => {
    if (op === "delete" || !data) locks.delete(id); else locks.set(id, data);
    setLockMark(byData(tbody, "id", id)?.querySelector(".machine-link"), locks.get(id));
  });
  live.on("resync", () => load({ limit: Math.max(PAGE_SIZE, tbody.rows.length) }));
  renderMeta(null);
  // Arriving from a machine page that deleted its machine.
  const deleted = new URLSearchParams(location.search).get("deleted");
  if (deleted) {
    toast(`Deleted ${deleted}`, "It is no longer in the inventory.");
    syncURL();
  }
}

// ------------------------------------------------------------------------------ machine page

function initMachine() {
  let machine = PAGE.machine;
  const id = machine.id;
  const transitions = Object.fromEntries((PAGE.transitions || []).map((t) => [t.name, t])); // in table order
  const typeToConfirm = new Set(PAGE.type_to_confirm || []);
  let workflow = PAGE.workflow || null;
  let lock = PAGE.lock || null;
  let deleting = false;

  // ---- discovery agent: whether one waits for orders (from its heartbeats), and the admin's
  // reboot / power off / boot disk buttons, off with the guard's reason or the agent's absence
  let agent = PAGE.agent || null;
  const AGENT_COMMANDS = PAGE.agent_commands || {};
  const NO_AGENT = new Set(PAGE.no_agent_states || []);
  let agentTimer = 0;
  const agentReason = () => (agent && !agent.live && agent.reason ? `${capitalize(agent.reason)}.` : "");
  const renderAgent = () => {
    const cell = $('[data-field="agent"]');
    const pending = agent?.pending;
    cell?.replaceChildren(pending
      ? h("span", { class: "pill pill-accent", title: `Queued by ${pending.by || "someone"}; the agent collects it at its next heartbeat` }, `${pending.command} queued`)
      : agent?.live ? h("span", { class: "pill pill-ok", title: "The discovery agent is waiting for orders" }, "waiting")
        : h("span", { class: "muted", title: agent?.reason || "" }, "—"));
    const box = $("#agent-tools");
    if (!box) return;
    box.hidden = NO_AGENT.has(machine.state);
    const reason = guardReason(lock) || agentReason();
    for (const button of $$("[data-agent-command]", box)) {
      if (reason) {
        button.setAttribute("aria-disabled", "true");
        button.title = reason;
      } else {
        button.removeAttribute("aria-disabled");
        button.title = AGENT_COMMANDS[button.dataset.agentCommand]?.help || "";
      }
    }
    const cancel = $("[data-agent-cancel]", box);
    if (cancel) cancel.hidden = !pending;
  };
  const reloadAgent = async () => {
    try {
      agent = await api("GET", `/api/machines/${encodeURIComponent(id)}/agent`);
    } catch { return; } // offline: asked again on reconnect
    renderAgent();
    scheduleAgent();
  };
  const reloadAgentSoon = throttle(reloadAgent, 2000);
  // Liveness lapses with time alone (no event says so): ask again when its window ends.
  const scheduleAgent = () => {
    clearTimeout(agentTimer);
    if (!agent?.live || agent.last_seen == null) return;
    const ends = (agent.last_seen + agent.window_seconds - SERVER_SKEW) * 1000 - Date.now();
    agentTimer = setTimeout(reloadAgent, Math.max(1000, ends + 500));
  };

  // ---- header: state, reason, power, facts, action buttons
  const REASON_TITLE = { failed: "Deployment failed", maintenance: "In maintenance" };
  const ACTION_STYLE = { reimage: "btn-danger", release: "btn-danger", adopt: "btn-primary", deploy: "btn-primary", resume: "btn-primary" };
  const allowedActions = (state) => Object.entries(transitions)
    .filter(([name, t]) => t.from.includes(state) && CAN.action(name)).map(([name]) => name);

  const renderActions = (state) => {
    const box = $("#actions");
    const wanted = allowedActions(state);
    const have = $$("[data-action]", box).map((b) => b.dataset.action);
    if (wanted.join() === have.join()) return;
    box.replaceChildren(...wanted.map((a) => h("button", { type: "button", class: `btn ${ACTION_STYLE[a] || ""}`.trim(), "data-action": a, "data-destructive": !!transitions[a].destructive },
      icon((APP.actions || {})[a] || "chevron-right"), capitalize(a))));
    applyGuards();
  };

  // ---- lock and safety mode: the badge, the callout, and destructive buttons off with the reason
  const DELETE_TITLE = "Remove this machine from the inventory";
  const applyGuards = () => {
    const reason = guardReason(lock);
    for (const button of $$("#actions [data-destructive], #tools [data-destructive]")) {
      if (reason) {
        button.setAttribute("aria-disabled", "true");
        button.title = reason;
      } else {
        button.removeAttribute("aria-disabled");
        if (button.dataset.tool === "delete") button.title = DELETE_TITLE; else button.removeAttribute("title");
      }
    }
    renderAgent();
  };

  const applyLock = (next) => {
    const focused = document.activeElement?.closest?.("[data-tool]")?.dataset.tool;
    lock = next || null;
    const badge = $("#lock-badge");
    badge.hidden = !lock;
    badge.title = lock ? lockTitle(lock) : "";
    const callout = $("#lock-callout");
    callout.hidden = !lock;
    if (lock) {
      setText(byData(callout, "field", "lock-by"), lock.by || "someone");
      byData(callout, "field", "lock-since").replaceChildren(...(lock.since ? ["· ", when(lock.since)] : []));
      setText(byData(callout, "field", "lock-reason"), lock.reason || "No reason given.");
    }
    for (const b of $$('[data-tool="lock"]')) b.hidden = Boolean(lock);
    for (const b of $$('[data-tool="unlock"]')) b.hidden = !lock;
    // Keep keyboard focus on the toggle that replaced the one just used.
    if (focused === "lock" || focused === "unlock") ($(`[data-tool="${lock ? "unlock" : "lock"}"]:not([hidden])`) || badge).focus?.();
    applyGuards();
  };

  const applyMachine = (m) => {
    const before = machine;
    machine = { ...machine, ...m };
    for (const el of $$('[data-field="name"]')) setText(el, m.name);
    document.title = `${m.name} · Dragonfly`;
    if (before.state !== m.state || !$('[data-field="badge"] .badge')) $('[data-field="badge"]').replaceChildren(badge(m.state));
    const power = $('[data-field="power"]');
    power.className = `power power-${m.power}`;
    setText(power.querySelector("span"), m.power);
    setText($('[data-field="ip"]'), m.ip || "—");
    setText($('[data-field="os"]'), m.os ? templateName(m.os) : "—");
    $('[data-field="last_seen"]').replaceChildren(when(m.last_seen));
    const callout = $("#state-reason");
    callout.hidden = !m.state_reason;
    callout.className = `callout callout-${m.state}`;
    setText(byData(callout, "field", "reason-title"), REASON_TITLE[m.state] || "Note");
    setText(byData(callout, "field", "reason"), m.state_reason || "");
    renderActions(m.state);
    if ("lock" in m) applyLock(m.lock); // API answers carry the lock; live events do not
    renderTags(m.tags || []);
    const role = $("#role-input");
    if (role && document.activeElement !== role && role.value !== (m.role || "")) role.value = m.role || "";
    setText($('[data-field="role"]'), m.role || "—");
    if (m.workflow_id && m.workflow_id !== workflow?.id) loadWorkflow(m.workflow_id);
  };

  // ---- workflow timeline
  const stepIcon = (state) => ({ succeeded: icon("check-circle"), failed: icon("x-circle"), running: icon("spinner", "spin") }[state] || icon("circle-dashed"));
  const stepState = (a) => (a.state === "running" ? `running · ${Math.round(a.progress)}%` : a.state);

  const buildWorkflow = (wf) => h("div", {},
    h("div", { class: "wf-overall" },
      h("div", { class: "wf-line" },
        h("span", { class: "wf-stage", "data-field": "stage" }, wf.stage || wf.state),
        h("span", { class: "num strong", "data-field": "pct" }, fmt.pct(wf.progress))),
      progressBar(wf.progress, "Deployment progress", wf.state),
      h("div", { class: "wf-line muted small" },
        h("span", { "data-field": "bytes" }, ""), h("span", { "data-field": "eta" }, ""))),
    h("div", { class: "wf-error", "data-field": "error", hidden: true }, icon("x-circle"), h("p", {})),
    h("ol", { class: "steps-timeline", "data-field": "steps" }, wf.actions.map((a, i) =>
      h("li", { class: `step step-${a.state}`, "data-step": i },
        h("span", { class: "step-icon" }, stepIcon(a.state)),
        h("div", { class: "step-body" },
          h("div", { class: "step-head" }, h("span", { class: "step-name" }, a.name), h("span", { class: "step-state" }, stepState(a))),
          a.image ? h("div", { class: "step-image mono faint" }, a.image) : null)))));

  /** Draw `wf` into the Deployment card, in place when it is the one already shown. */
  const renderWorkflow = (wf) => {
    const box = $("#workflow");
    const summary = $('[data-field="wf-summary"]');
    if (!wf) return;
    if (box.dataset.wf !== wf.id || $$(".step", box).length !== wf.actions.length) {
      box.replaceChildren(...buildWorkflow(wf).childNodes);
      box.dataset.wf = wf.id;
    }
    summary.replaceChildren(h("span", { class: "wf-os" }, templateName(wf.template)),
      h("span", { class: `engine engine-${wf.engine}` }, wf.engine),
      h("span", { class: `wf-state wf-${wf.state}` }, wf.state));
    setText(byData(box, "field", "stage"), wf.stage || wf.state);
    setText(byData(box, "field", "pct"), fmt.pct(wf.progress));
    setProgress(box.querySelector(".wf-overall .progress"), wf.progress, wf.state);
    setText(byData(box, "field", "bytes"), `${fmt.bytes(wf.bytes_done)} of ${fmt.bytes(wf.bytes_total)}`);
    setText(byData(box, "field", "eta"), wf.state === "running" ? `ETA ${fmt.eta(wf.eta_seconds)}` : "");
    const error = byData(box, "field", "error");
    error.hidden = !wf.error;
    setText(error.querySelector("p"), wf.error || "");
    wf.actions.forEach((a, i) => {
      const li = byData(box, "step", String(i));
      if (!li) return;
      const cls = `step step-${a.state}`;
      if (li.className !== cls) {
        li.className = cls;
        li.querySelector(".step-icon").replaceChildren(stepIcon(a.state));
      }
      setText(li.querySelector(".step-state"), stepState(a));
      let bar = li.querySelector(".progress");
      if (a.state === "running") {
        if (!bar) { bar = progressBar(a.progress, `${a.name} progress`, "running"); li.querySelector(".step-body").append(bar); }
        setProgress(bar, a.progress, "running");
      } else if (bar) {
        bar.remove();
      }
    });
  };

  const pastItem = (w) => h("li", { class: "past", "data-wf": w.id },
    h("span", { class: `wf-state wf-${w.state}` }, w.state),
    h("span", { class: "past-os" }, templateName(w.template)),
    h("span", { class: `engine engine-${w.engine}` }, w.engine),
    h("span", { class: "past-when muted" }, when(w.finished_at || w.created_at)),
    w.error ? h("p", { class: "past-error" }, w.error) : null);

  /** A new workflow replaced the shown one: the old one moves to the past list. */
  const showWorkflow = (wf) => {
    if (workflow && workflow.id !== wf.id) {
      const past = $("#past-workflows");
      byData(past, "wf", workflow.id)?.remove();
      past.prepend(pastItem(workflow));
      $(".past-empty").hidden = true;
    }
    workflow = wf;
    renderWorkflow(wf);
  };

  const loadWorkflow = async (workflowId) => {
    try { showWorkflow(await api("GET", `/api/workflows/${encodeURIComponent(workflowId)}`)); } catch (err) { showError(err, "Cannot load the deployment"); }
  };

  // ---- history
  const historyItem = (e) => h("li", { class: `hist hist-${e.kind}`, "data-id": e.id },
    h("span", { class: "hist-dot", "aria-hidden": "true" }),
    h("div", {}, h("p", { class: "hist-msg" }, e.message),
      h("p", { class: "hist-meta" }, h("span", { class: "hist-kind" }, e.kind), " · ", when(e.at))));

  // ---- tags editor
  const tagError = $("#tag-error");
  const tagInput = $("#tag-input");
  const renderTags = (tags) => {
    const list = $("#tag-list");
    const have = $$("li", list).map((li) => li.dataset.tag);
    if (have.join("\n") === tags.join("\n")) return;
    list.replaceChildren(...tags.map((t) => h("li", { class: "chip tag", "data-tag": t },
      h("a", { href: `/machines?tag=${encodeURIComponent(t)}` }, t),
      CAN.write ? h("button", { type: "button", class: "chip-x", "aria-label": `Remove tag ${t}`, "data-remove-tag": t }, icon("x")) : null)));
  };
  const setTagError = (message) => {
    tagError.hidden = !message;
    setText(tagError, message || "");
    if (message) tagInput.setAttribute("aria-invalid", "true"); else tagInput.removeAttribute("aria-invalid");
  };
  const saveTags = async (tags) => {
    const m = await api("PUT", `/api/machines/${encodeURIComponent(id)}/tags`, { tags });
    machine = { ...machine, ...m };
    renderTags(m.tags);
    return m;
  };
  tagInput?.addEventListener("keydown", async (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const tag = tagInput.value;
    if (!tag.trim()) { setTagError(""); return; }
    if (machine.tags.includes(tag.trim())) { setTagError(`Already tagged “${tag.trim()}”`); return; }
    try {
      await saveTags([...machine.tags, tag]);
      tagInput.value = "";
      setTagError("");
    } catch (err) {
      setTagError(err.detail && typeof err.detail === "object" && "length" in err.detail ? `${err.message} (this one has ${err.detail.length})` : err.message);
    }
  });
  tagInput?.addEventListener("input", () => { if (!tagError.hidden) setTagError(""); });
  $("#tag-list").addEventListener("click", async (e) => {
    const button = e.target.closest("[data-remove-tag]");
    if (!button) return;
    const tag = button.dataset.removeTag;
    try {
      await saveTags(machine.tags.filter((t) => t !== tag));
      setTagError("");
      tagInput?.focus();
    } catch (err) { setTagError(err.message); }
  });

  // ---- role
  const roleError = $("#role-error");
  $("#role-form")?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#role-input");
    try {
      const m = await api("PATCH", `/api/machines/${encodeURIComponent(id)}`, { role: input.value });
      machine = { ...machine, ...m };
      roleError.hidden = true;
      input.removeAttribute("aria-invalid");
      toast(m.role ? `Role set to “${m.role}”` : "Role cleared");
    } catch (err) {
      roleError.hidden = false;
      setText(roleError, err.message);
      input.setAttribute("aria-invalid", "true");
    }
  });

  // ---- actions
  let templates = null;
  const templateField = async (label) => {
    if (!templates) templates = await api("GET", "/api/templates");
    const select = h("select", { id: "action-template", name: "template", required: true },
      templates.map((t) => h("option", { value: t.slug }, `${t.name} · ${fmt.bytes(t.image_bytes)}`)));
    if (machine.os && templates.some((t) => t.slug === machine.os)) select.value = machine.os;
    return h("div", { class: "field" }, h("label", { for: "action-template" }, label), select);
  };

  const post = (action, body = {}) => api("POST", `/api/machines/${encodeURIComponent(id)}/actions/${action}`, body);

  const runAction = async (action) => {
    const t = transitions[action] || {};
    const name = machine.name;
    let result = null;
    try {
      if (action === "deploy" || action === "reimage") {
        const field = await templateField(action === "deploy" ? "OS template" : "OS template to install");
        result = await modal({
          title: action === "deploy" ? `Deploy ${name}` : `Reimage ${name}`,
          iconName: APP.actions[action], danger: true,
          confirmLabel: action === "deploy" ? "Deploy" : "Wipe and reimage",
          requireText: typeToConfirm.has(action) ? name : "",
          body: [h("p", {}, action === "deploy" ? "Installs the chosen OS. Everything on this machine's disks will be overwritten."
            : "Wipes this machine's disks and installs the chosen OS again. Its current OS and data are lost."), field],
          onConfirm: (form) => post(action, { template: form.elements.template.value }),
        });
      } else if (action === "release") {
        result = await modal({
          title: `Release ${name}`, iconName: APP.actions[action], danger: true, confirmLabel: "Release",
          requireText: typeToConfirm.has(action) ? name : "",
          body: [h("p", {}, t.help || "Returns the machine to the pool.")],
          onConfirm: () => post(action),
        });
      } else if (action === "maintenance") {
        const reason = h("input", { id: "action-reason", name: "reason", maxlength: "500", placeholder: "e.g. replacing a DIMM", autocomplete: "off" });
        result = await modal({
          title: `Maintenance for ${name}`, iconName: APP.actions[action], confirmLabel: "Take out of service",
          body: [h("p", {}, t.help || ""), h("div", { class: "field" }, h("label", { for: "action-reason" }, "Reason (optional)"), reason)],
          onConfirm: (form) => post(action, { reason: form.elements.reason.value.trim() }),
        });
      } else {
        result = await post(action);
      }
    } catch (err) {
      showError(err, `Cannot ${action}`);
      return;
    }
    if (result) {
      applyMachine(result);
      const said = {
        adopt: [`Adopted ${name}`, "It is ready to deploy."],
        deploy: [`Deploying ${name}`, "Progress shows under Deployment."],
        reimage: [`Reimaging ${name}`, "Progress shows under Deployment."],
        release: [`Released ${name}`, "It is back in the pool."],
        maintenance: [`${name} is in maintenance`, ""],
        resume: [`${name} is back in service`, ""],
      }[action] || [`${name}: ${action}`, ""];
      toast(...said);
    }
  };

  /** A destructive button that safety mode or the lock turned off says why instead. */
  const refused = (button) => {
    if (button.getAttribute("aria-disabled") !== "true") return false;
    toast(button.title || "Not possible right now", "", "error", "lock");
    return true;
  };

  $("#actions").addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (button && !refused(button)) runAction(button.dataset.action);
  });

  // ---- lock, unlock, delete
  const lockMachine = async () => {
    const reason = h("input", { id: "lock-reason", name: "reason", maxlength: "500", placeholder: "e.g. production database, ask Dana first", autocomplete: "off" });
    const result = await modal({
      title: `Lock ${machine.name}`, iconName: "lock", confirmLabel: "Lock", inlineErrors: true,
      body: [h("p", {}, "While it is locked, nobody can reimage, release, deploy over, delete or power-control this machine. Tags and role can still be edited."),
        h("div", { class: "field" }, h("label", { for: "lock-reason" }, "Reason (shown to everyone)"), reason)],
      onConfirm: (form) => api("PUT", `/api/machines/${encodeURIComponent(id)}/lock`, { reason: form.elements.reason.value.trim() }),
    });
    if (result) {
      applyLock(result.lock);
      toast(`Locked ${machine.name}`, result.lock?.reason || "");
    }
  };

  const unlockMachine = async () => {
    try {
      await api("DELETE", `/api/machines/${encodeURIComponent(id)}/lock`);
    } catch (err) { showError(err, "Cannot unlock"); return; }
    applyLock(null);
    toast(`Unlocked ${machine.name}`, "Reimage, delete and power actions are possible again.");
  };

  const deleteMachine = async () => {
    const name = machine.name;
    const done = await modal({
      title: `Delete ${name}`, iconName: "trash", danger: true, confirmLabel: "Delete machine", requireText: name,
      body: [h("p", {}, "Removes this machine, its history and its deployments from Dragonfly. The hardware is not touched: if it PXE-boots again, it is discovered as a new machine.")],
      onConfirm: async () => { deleting = true; try { return await api("DELETE", `/api/machines/${encodeURIComponent(id)}`); } catch (err) { deleting = false; throw err; } },
    });
    if (done) location.assign(`/machines?deleted=${encodeURIComponent(name)}`);
  };

  $("#tools")?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-tool]");
    if (!button || refused(button)) return;
    ({ lock: lockMachine, unlock: unlockMachine, delete: deleteMachine })[button.dataset.tool]?.();
  });

  // ---- agent commands
  const AGENT_SAYS = {
    reboot: ["refresh", "The machine restarts and PXE-boots again: back into discovery, or to its disk if Dragonfly is deploying it or it is installed."],
    poweroff: ["power", "The machine switches off and stays off until someone powers it on (its BMC, the button or Wake-on-LAN)."],
    localboot: ["disk", "The machine restarts to leave discovery for its local disk. If it PXE-boots first, Dragonfly's boot script decides: discovered machines come back to discovery."],
  };
  const sendAgentCommand = async (command) => {
    const name = machine.name;
    const label = AGENT_COMMANDS[command]?.label || command;
    const [iconName, text] = AGENT_SAYS[command] || ["power", ""];
    const result = await modal({
      title: `${label}: ${name}`, iconName, confirmLabel: label, danger: command === "poweroff", inlineErrors: true,
      body: [h("p", {}, text), h("p", { class: "muted" }, "The discovery agent collects the command at its next heartbeat.")],
      onConfirm: () => api("POST", `/api/machines/${encodeURIComponent(id)}/agent/commands`, { command }),
    });
    if (!result) return;
    agent = result.agent;
    renderAgent();
    toast(`${label} queued for ${name}`, result.replaced && result.replaced.command !== command ? `It replaces the queued ${result.replaced.command}.` : "The agent collects it at its next heartbeat.");
  };
  const withdrawAgentCommand = async () => {
    let result;
    try {
      result = await api("DELETE", `/api/machines/${encodeURIComponent(id)}/agent/commands`);
    } catch (err) { showError(err, "Cannot withdraw"); return; }
    agent = result.agent;
    renderAgent();
    toast(result.cancelled ? `Withdrew the queued ${result.cancelled.command}` : "Nothing was queued any more", result.cancelled ? "" : "The agent had already collected it.");
  };
  $("#agent-tools")?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-agent-command], [data-agent-cancel]");
    if (!button || refused(button)) return;
    if (button.matches("[data-agent-cancel]")) withdrawAgentCommand(); else sendAgentCommand(button.dataset.agentCommand);
  });

  // ---- boot doctor timeline
  const bootBox = $("#boot-timeline");
  const bootMacs = new Set(PAGE.boot_macs || []);
  const timelines = new Map((PAGE.boot || []).map((t) => [t.mac, t]));
  const seenSteps = new Map(); // mac -> steps drawn, to flash the new ones

  const bootStepEl = (step, i, steps, diagnosis, isNew) => {
    const isLast = i === steps.length - 1;
    const tone = stepTone(step, isLast, diagnosis);
    const facts = bootFacts(step);
    const gap = i > 0 ? step.at - steps[i - 1].last_at : null;
    return h("li", { class: `bstep bstep-${tone}${isNew ? " bstep-new" : ""}`, "data-step": step.step },
      h("span", { class: `bdot tone-${tone}`, "aria-hidden": "true" }),
      h("div", { class: "bstep-body" },
        h("div", { class: "bstep-head" },
          h("span", { class: "bstep-label" }, step.label),
          step.count > 1 ? h("span", { class: "bstep-count", title: `Seen ${step.count} times, the last ${fmt.ago(step.last_at)}` }, `×${step.count}`) : null),
        facts.length ? h("div", { class: "bstep-facts" }, facts) : null),
      h("div", { class: "bstep-time" }, when(step.at),
        gap != null && gap >= 0.1 ? h("span", { class: "bstep-gap faint", title: "after the previous step" }, `+${seconds(Math.max(0, gap))}`) : null));
  };

  const renderBoot = () => {
    const list = [...timelines.values()].filter((t) => t.steps.length && bootMacs.has(t.mac));
    if (!list.length) { bootBox.replaceChildren(); return; }
    const stopped = list.filter((t) => t.diagnosis);
    const done = list.some((t) => DONE_STEPS.has(lastStep(t).step));
    const status = stopped.length ? h("span", { class: "pill pill-danger" }, "stopped")
      : done ? h("span", { class: "pill pill-ok" }, "checked in") : h("span", { class: "pill pill-accent" }, "booting");
    const nodes = [h("header", { class: "card-head" },
      h("h2", {}, icon("zap"), "Boot timeline"),
      h("span", { class: "card-head-end" }, list.length === 1 ? h("span", { class: "mono muted small" }, list[0].mac) : null, status))];
    for (const t of stopped) {
      nodes.push(h("div", { class: "callout callout-failed boot-diagnosis", role: "status" },
        icon("alert", "callout-icon"),
        h("div", {},
          h("p", { class: "callout-title" }, `Boot stopped after “${lastStep(t).label}”${list.length > 1 ? ` on ${t.mac}` : ""}`),
          h("p", { class: "callout-text" }, capitalize(t.diagnosis)))));
    }
    for (const t of list) {
      const before = seenSteps.get(t.mac);
      const last = lastStep(t);
      const items = t.steps.map((step, i) => bootStepEl(step, i, t.steps, t.diagnosis, before != null && i >= before));
      if (t.diagnosis && NEXT_STEP[last.step] && !ERROR_STEPS.has(last.step)) {
        items.push(h("li", { class: "bstep bstep-missing" },
          h("span", { class: "bdot tone-missing", "aria-hidden": "true" }),
          h("div", { class: "bstep-body" }, h("div", { class: "bstep-head" }, h("span", { class: "bstep-label" }, `${NEXT_STEP[last.step]} never came`))),
          h("div", { class: "bstep-time" })));
      }
      seenSteps.set(t.mac, t.steps.length);
      nodes.push(h("section", { class: "boot-nic", "aria-label": `Boot steps of ${t.mac}` },
        list.length > 1 ? h("div", { class: "boot-nic-head" }, icon("network"), "NIC ", h("span", { class: "mono" }, t.mac)) : null,
        h("ol", { class: "bsteps" }, items)));
    }
    bootBox.replaceChildren(...nodes);
  };

  const reloadBoot = async () => {
    if (!PAGE.boot_enabled) return;
    try {
      const list = await api("GET", `/api/machines/${encodeURIComponent(id)}/boot`);
      timelines.clear();
      for (const t of list) timelines.set(t.mac, t);
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load the boot timeline"); // offline: reloaded on reconnect
      return;
    }
    renderBoot();
    bootDeadlines_(timelines.values());
  };
  const bootDeadlines_ = bootDeadlines(reloadBoot);

  // ---- live
  live.on("machine", ({ op, id: changed, data }) => {
    if (changed !== id) return;
    if (op === "delete") { if (!deleting) toast("This machine was deleted", "Someone removed it from the inventory.", "error"); return; }
    if (data) applyMachine(data);
    reloadAgentSoon(); // a heartbeat moved last_seen, or the state changed
  });
  live.on("lock", ({ op, id: changed, data }) => {
    if (changed === id) applyLock(op === "delete" ? null : data);
  });
  SAFETY.on(applyGuards);
  live.on("boot", ({ op, id: mac, data }) => {
    if (!bootMacs.has(mac)) return;
    if (op === "delete" || !data) timelines.delete(mac); else timelines.set(mac, data);
    renderBoot();
    bootDeadlines_(timelines.values());
  });
  live.on("workflow", ({ data }) => {
    if (!data || data.machine_id !== id) return;
    if (!workflow || data.id === workflow.id || data.created_at >= (workflow.created_at || 0)) showWorkflow(data);
  });
  live.on("history", ({ op, data }) => {
    if (op !== "put" || !data || data.machine_id !== id) return;
    if (data.kind === "agent") reloadAgentSoon(); // a command queued, collected or withdrawn
    const list = $("#history");
    if (byData(list, "id", data.id)) return;
    const item = historyItem(data);
    item.classList.add("new");
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
  });
  live.on("resync", async () => {
    try {
      const [m, events, flows] = await Promise.all([
        api("GET", `/api/machines/${encodeURIComponent(id)}`),
        api("GET", `/api/machines/${encodeURIComponent(id)}/history?limit=100`),
        api("GET", `/api/machines/${encodeURIComponent(id)}/workflows`)]);
      applyMachine(m);
      $("#history").replaceChildren(...events.map(historyItem));
      const current = flows.find((w) => w.id === m.workflow_id);
      if (current) showWorkflow(current);
      const past = flows.filter((w) => w !== current);
      $("#past-workflows").replaceChildren(...past.map(pastItem));
      $(".past-empty").hidden = past.length > 0;
    } catch (err) { showError(err, "Cannot refresh this machine"); }
    reloadBoot();
    reloadAgent();
  });

  renderBoot();
  bootDeadlines_(timelines.values());
  scheduleAgent();
}

// ------------------------------------------------------------------------------ tags page

function initTags() {
  const tbody = $("#tag-rows");
  const tagRow = (t, top) => h("tr", { "data-tag": t.name },
    h("td", {}, h("a", { class: "chip tag", href: `/machines?tag=${encodeURIComponent(t.name)}` }, t.name)),
    h("td", { class: "num" }, h("a", { href: `/machines?tag=${encodeURIComponent(t.name)}`, "aria-label": `${t.count} machines tagged ${t.name}` }, t.count)),
    h("td", { class: "col-share" }, h("span", { class: "share", "aria-hidden": "true" }, h("span", { style: `width: ${(100 * t.count / top).toFixed(1)}%` }))),
    h("td", { class: "col-actions" }, CAN.write ? [
      h("button", { type: "button", class: "btn btn-sm btn-ghost", "data-rename": t.name, "aria-label": `Rename tag ${t.name}` },
        icon("edit"), h("span", { class: "btn-label" }, "Rename")),
      h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-delete": t.name, "aria-label": `Delete tag ${t.name}` },
        icon("trash"), h("span", { class: "btn-label" }, "Delete"))] : null));

  const reload = async () => {
    let tags;
    try { tags = await api("GET", "/api/tags"); } catch (err) { showError(err, "Cannot load tags"); return; }
    const top = Math.max(1, ...tags.map((t) => t.count));
    tbody.replaceChildren(...tags.map((t) => tagRow(t, top)));
    $("#tags-table").hidden = tags.length === 0;
    $(".tags-empty").hidden = tags.length > 0;
    setText($('[data-field="tag-count"]'), String(tags.length));
  };

  tbody.addEventListener("click", async (e) => {
    const rename = e.target.closest("[data-rename]");
    const remove = e.target.closest("[data-delete]");
    if (rename) {
      const old = rename.dataset.rename;
      const input = h("input", { id: "rename-tag", name: "name", value: old, autocomplete: "off", spellcheck: "false" });
      const done = await modal({
        title: `Rename “${old}”`, iconName: "edit", confirmLabel: "Rename", inlineErrors: true,
        body: [h("p", { class: "muted" }, "Renames the tag on every machine that carries it."),
          h("div", { class: "field" }, h("label", { for: "rename-tag" }, "New name"), input)],
        onConfirm: (form) => api("PUT", `/api/tags/${encodeURIComponent(old)}`, { name: form.elements.name.value }),
      });
      if (done) { toast(`Renamed on ${done.updated} machine${done.updated === 1 ? "" : "s"}`); reload(); }
    } else if (remove) {
      const tag = remove.dataset.delete;
      const count = byData(tbody, "tag", tag)?.cells[1].textContent.trim() || "its";
      const done = await modal({
        title: `Delete “${tag}”`, iconName: "trash", confirmLabel: "Delete tag", danger: true,
        body: [h("p", {}, `Removes the tag from ${count} machine${count === "1" ? "" : "s"}. The machines themselves are not changed otherwise.`)],
        onConfirm: () => api("DELETE", `/api/tags/${encodeURIComponent(tag)}`),
      });
      if (done) { toast(`Deleted “${tag}” from ${done.updated} machine${done.updated === 1 ? "" : "s"}`); reload(); }
    }
  });

  // Only tag changes matter here; heartbeats and progress are ignored.
  const known = new Map();
  const reloadSoon = throttle(reload, 1500);
  live.on("machine", ({ op, id, data }) => {
    const tags = op === "delete" || !data ? null : data.tags.join("\n");
    if (known.get(id) !== tags) reloadSoon();
    known.set(id, tags);
  });
  live.on("resync", reload);
}

// ------------------------------------------------------------------------------ start

const PAGES = { dashboard: initDashboard, machines: initMachines, machine: initMachine, tags: initTags };

initTheme();
initDialogs();
initSetup();
initAccountMenu();
initSafety();
PAGES[PAGE_NAME]?.();
live.start();
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshTimes(); });
