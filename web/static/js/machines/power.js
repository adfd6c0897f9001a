// The machine list's power: every machine's power status (GET /api/power, then the "power"
// documents of the event stream) for the Power column and the power filter, and power actions
// on the selected machines from the bulk bar (POST /api/power/bulk/{op}), each machine's
// refusal or failure listed under the bar.

import { api } from "../api.js";
import { modal } from "../dialogs.js";
import { $, $$, byData, h, icon } from "../dom.js";
import { SAFETY, guardReason } from "../guards.js";
import { live } from "../live.js";
import { DISRUPTIVE, POWER_OPS, mergePower, opLabel, powerCell, powerKey } from "../power.js";
import { showError, toast } from "../toast.js";

const NAMES_SHOWN = 8; // machines named in the confirmation before "and N more"

/** A refusal or failure of one machine, in a word or two: "423 · locked". */
const refusal = (r) => {
  const word = r.status === 423 ? (/^safety mode/i.test(r.error) ? "safety mode" : "locked")
    : { 400: "invalid", 404: "not found", 409: "not supported", 502: "BMC failed", 503: "unavailable" }[r.status] || "failed";
  return `${r.status} · ${word}`;
};

/**
 * `powers` (id -> power status) is the page's map; `query` its filters, `requery()` reloads the
 * rows, `nameOf(id)` names a machine, `selected` is the selection (a Set of ids).
 * Returns {loadAll, filtered}: loadAll() fetches every machine's power (true when it could),
 * filtered(params, offset, limit) answers like GET /api/machines with the power filter applied.
 */
export function initListPower(tbody, powers, { query, requery, nameOf, selected }) {
  let complete = false; // GET /api/power answered: a machine missing from it has no BMC

  const redraw = (id) => {
    const cell = byData(tbody, "id", id)?.querySelector(".col-power");
    if (cell) cell.replaceChildren(powerCell(powers.get(id)));
  };

  const loadAll = async () => {
    let list;
    try {
      list = await api("GET", "/api/power");
    } catch (err) {
      // 404: a server without the list yet; the rows keep what the page and the stream say.
      if (err.status !== 404 && err.status !== 0) showError(err, "Cannot load the power states");
      return false;
    }
    powers.clear();
    for (const status of list) powers.set(status.machine, status);
    complete = true;
    for (const tr of tbody.rows) redraw(tr.dataset.id);
    return true;
  };

  /** The API's list has no power filter: every row matching the rest, filtered, counted and paged here. */
  const filtered = async (params, offset, limit) => {
    params.delete("state");
    params.delete("offset");
    params.set("limit", "10000");
    const all = await api("GET", `/api/machines?${params}`);
    const matching = all.items.filter((m) => powerKey(powers.get(m.id)) === query.power);
    const states = {};
    for (const m of matching) states[m.state] = (states[m.state] || 0) + 1;
    const rows = query.state ? matching.filter((m) => m.state === query.state) : matching;
    return { items: rows.slice(offset, offset + limit), total: rows.length, states };
  };

  // A machine whose record is new (or whose driver changed): ask what its driver supports.
  const fetchOne = async (id) => {
    try {
      powers.set(id, await api("GET", `/api/machines/${encodeURIComponent(id)}/power`));
    } catch { return; }
    redraw(id);
  };

  live.on("power", ({ op, id, data }) => {
    const before = powers.get(id);
    const [next, whole] = mergePower(before, id, op, data);
    powers.set(id, next);
    redraw(id);
    if (!whole && next.configured) fetchOne(id);
    if (query.power && powerKey(before) !== powerKey(next)) requery();
  });
  live.on("resync", loadAll);

  // --- bulk power actions ---------------------------------------------------------------
  const bar = $("#bulkbar");
  const results = $("#bulk-results");
  const buttons = () => (bar ? $$("[data-bulk-power]", bar) : []);

  // Safety mode refuses every power action: the buttons say so instead (locks are per machine:
  // the answer lists those).
  const applySafety = () => {
    const reason = SAFETY.state?.enabled ? guardReason(null) : "";
    for (const button of buttons()) {
      if (reason) { button.setAttribute("aria-disabled", "true"); button.title = reason; }
      else { button.removeAttribute("aria-disabled"); button.title = POWER_OPS[button.dataset.bulkPower]?.[2] || ""; }
    }
  };
  SAFETY.on(applySafety);
  applySafety();

  /** Why machine `id` cannot do `op` ("" when it can, or when the page cannot tell). */
  const skipReason = (id, op) => {
    const status = powers.get(id);
    if (!status) return complete ? "no BMC" : "";
    if (status.configured === false) return "no BMC";
    if (status.actions?.length && !status.actions.includes(op)) return `the ${status.driver} driver cannot ${opLabel(op).toLowerCase()}`;
    return "";
  };

  const machineLink = (id) => h("a", { href: `/machines/${encodeURIComponent(id)}` }, nameOf(id));

  const showResults = (op, answer, skipped) => {
    if (!results) return;
    const failed = (answer?.results || []).filter((r) => !r.ok);
    const done = answer?.ok || 0;
    const parts = [`${done} done`];
    if (failed.length) parts.push(`${failed.length} refused or failed`);
    if (skipped.length) parts.push(`${skipped.length} skipped`);
    const bad = failed.length > 0 || skipped.length > 0;
    results.className = `callout bulk-results ${bad ? "callout-failed" : "callout-info"}`;
    results.replaceChildren(
      icon(bad ? "alert" : "check-circle", "callout-icon"),
      h("div", { class: "bulk-results-body" },
        h("p", { class: "callout-title", "data-field": "bulk-summary" }, `${opLabel(op)}: ${parts.join(", ")}`),
        bad ? h("ul", { class: "bulk-failures" },
          failed.map((r) => h("li", { "data-machine": r.machine, "data-status": String(r.status) },
            machineLink(r.machine), h("span", { class: "pill pill-danger" }, refusal(r)), h("span", { class: "bulk-error" }, r.error))),
          skipped.map(([id, why]) => h("li", { "data-machine": id, "data-status": "skipped" },
            machineLink(id), h("span", { class: "pill" }, "skipped"), h("span", { class: "bulk-error" }, why)))) : null),
      h("button", { type: "button", class: "icon-btn", "aria-label": "Dismiss", onclick: () => { results.hidden = true; } }, icon("x")));
    results.hidden = false;
  };

  const bulk = async (op) => {
    const [label, iconName, help] = POWER_OPS[op] || [op, "power", ""];
    const ids = [...selected];
    const skipped = [];
    const targets = [];
    for (const id of ids) {
      const why = skipReason(id, op);
      if (why) skipped.push([id, why]); else targets.push(id);
    }
    if (!targets.length) {
      toast(`None of the selected machines can ${label.toLowerCase()}`, skipped.length ? `${skipped.length} skipped: ${[...new Set(skipped.map((s) => s[1]))].join("; ")}.` : "", "error");
      showResults(op, null, skipped);
      return;
    }
    const n = targets.length;
    const plural = n === 1 ? "machine" : "machines";
    const names = targets.slice(0, NAMES_SHOWN).map(nameOf).join(", ") + (n > NAMES_SHOWN ? ` and ${n - NAMES_SHOWN} more` : "");
    const disruptive = DISRUPTIVE.has(op);
    const answer = await modal({
      title: `${label}: ${n} ${plural}`, iconName, danger: disruptive, confirmLabel: `${label} ${n} ${plural}`,
      requireText: disruptive && n > 1 ? String(n) : "",
      requireHint: "How many machines this interrupts.",
      body: [h("p", {}, help), h("p", { class: "muted" }, names),
        skipped.length ? h("p", { class: "help" }, `${skipped.length} other selected ${skipped.length === 1 ? "machine is" : "machines are"} skipped: ${[...new Set(skipped.map((s) => s[1]))].join("; ")}.`) : null,
        h("p", { class: "help" }, "Each machine is checked on its own: a locked machine, or safety mode, refuses it.")],
      onConfirm: () => api("POST", `/api/power/bulk/${op}`, { machines: targets }),
    });
    if (!answer) return; // cancelled, or the request failed (a toast said why)
    showResults(op, answer, skipped);
    toast(`${label}: ${answer.ok} of ${n} ${plural} done`, answer.failed ? `${answer.failed} refused or failed: see the list under the bar.` : "",
      answer.failed ? "error" : "ok", iconName);
  };

  bar?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-bulk-power]");
    if (!button) return;
    if (button.getAttribute("aria-disabled") === "true") { toast(button.title || "Not possible right now", "", "error", "lock"); return; }
    bulk(button.dataset.bulkPower).catch((err) => showError(err, "Bulk power failed"));
  });

  return { loadAll, filtered };
}
