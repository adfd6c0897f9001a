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
const CAN = { write: APP.can?.write !== false, action: (a) => APP.can?.actions?.[a] !== false };

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
  if (!res.ok) throw new ApiError(data?.error || `${res.status} ${res.statusText}`, data?.detail, res.status);
  return data;
}

const detailText = (detail) => {
  if (detail == null || detail === "") return "";
  if (typeof detail !== "object") return String(detail);
  return Object.entries(detail).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
};

// ------------------------------------------------------------------------------ toasts

function toast(title, text = "", kind = "ok") {
  const box = $("#toasts");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    icon(kind === "error" ? "alert-circle" : "check-circle"),
    h("div", { class: "toast-body" }, h("p", { class: "toast-title" }, title), text ? h("p", { class: "toast-text" }, text) : null),
    h("button", { type: "button", class: "icon-btn", "aria-label": "Dismiss", onclick: () => dismiss() }, icon("x")));
  const dismiss = () => { item.classList.add("leaving"); setTimeout(() => item.remove(), 220); };
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(dismiss, kind === "error" ? 9000 : 4500);
}

const showError = (err, what = "") => toast(what ? `${what}: ${err.message}` : err.message, detailText(err.detail), "error");

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
const live = {
  handlers: { machine: [], workflow: [], history: [], resync: [] },
  on(kind, fn) { this.handlers[kind].push(fn); },
  emit(kind, message) {
    for (const fn of this.handlers[kind]) {
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
    if (!("EventSource" in window)) { this.status("offline", "No live updates"); return; }
    const source = new EventSource("/api/events");
    let dropped = false;      // the stream broke: events may have been missed
    let resynced = false;     // ... but a resync already reloaded everything
    source.addEventListener("hello", () => {
      this.status("live", "Live");
      if (dropped && !resynced) this.emit("resync", {});
      dropped = resynced = false;
    });
    for (const kind of ["machine", "workflow", "history"]) {
      source.addEventListener(kind, (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        this.emit(kind, message);
        refreshTimes();
      });
    }
    source.addEventListener("resync", () => { resynced = true; this.emit("resync", {}); });
    source.onerror = () => {
      dropped = true;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the server answered an error): try again once, later.
        this.status("offline", "Offline");
        setTimeout(() => this.start(), 5000);
      } else {
        this.status("reconnecting", "Reconnecting");
      }
    };
  },
};

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

// ------------------------------------------------------------------------------ dashboard

function initDashboard() {
  const list = $("#deployments");
  const names = { ...(PAGE.names || {}) };
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
        h("a", { class: "recent-name", href: `/machines/${encodeURIComponent(m.id)}` }, m.name),
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
  live.on("resync", refresh);
}

// ------------------------------------------------------------------------------ machine list

function initMachines() {
  const tbody = $("#machine-rows");
  const query = { q: "", state: "", tag: "", sort: "name", order: "asc", ...(PAGE.query || {}) };
  const selected = new Set();
  let total = PAGE.total || 0;
  let lastChecked = null; // index of the last row clicked, for shift-click ranges
  let seq = 0;            // only the newest request's answer is drawn

  const rowEl = (m) => {
    const tr = h("tr", { "data-id": m.id, "data-state": m.state },
      h("td", { class: "col-check" }, h("input", { type: "checkbox", class: "row-check", "aria-label": `Select ${m.name}`, value: m.id })),
      h("td", { class: "col-name" },
        h("a", { class: "machine-link", href: `/machines/${encodeURIComponent(m.id)}` }, m.name),
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
  live.on("resync", () => load({ limit: Math.max(PAGE_SIZE, tbody.rows.length) }));
  renderMeta(null);
}

// ------------------------------------------------------------------------------ machine page

function initMachine() {
  let machine = PAGE.machine;
  const id = machine.id;
  const transitions = Object.fromEntries((PAGE.transitions || []).map((t) => [t.name, t])); // in table order
  const typeToConfirm = new Set(PAGE.type_to_confirm || []);
  let workflow = PAGE.workflow || null;

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
    box.replaceChildren(...wanted.map((a) => h("button", { type: "button", class: `btn ${ACTION_STYLE[a] || ""}`.trim(), "data-action": a },
      icon((APP.actions || {})[a] || "chevron-right"), a[0].toUpperCase() + a.slice(1))));
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

  $("#actions").addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (button) runAction(button.dataset.action);
  });

  // ---- live
  live.on("machine", ({ op, id: changed, data }) => {
    if (changed !== id) return;
    if (op === "delete") { toast("This machine was deleted", "", "error"); return; }
    if (data) applyMachine(data);
  });
  live.on("workflow", ({ data }) => {
    if (!data || data.machine_id !== id) return;
    if (!workflow || data.id === workflow.id || data.created_at >= (workflow.created_at || 0)) showWorkflow(data);
  });
  live.on("history", ({ op, data }) => {
    if (op !== "put" || !data || data.machine_id !== id) return;
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
  });
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
PAGES[document.body.dataset.page]?.();
live.start();
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshTimes(); });
