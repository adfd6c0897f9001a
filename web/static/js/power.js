// Power through a machine's BMC, as the list and the machine page show it: the state dot
// (macro power_cell in _ui.html draws the same), the operations' words, and power documents
// from the event stream merged into what the page knows.

import { APP } from "./data.js";
import { h } from "./dom.js";
import { fmt } from "./fmt.js";

// Every action a driver may support: {op: [button label, sprite icon, what it does,
// whether it interrupts a running machine]}, named once in Python (POWER_OPS in
// dragonfly/panel/render.py). Keys come sorted: the order to show is the API's (`actions`).
export const POWER_OPS = APP.power_ops || {};
// Actions that interrupt a running machine: confirmed in a dialog first.
export const DISRUPTIVE = new Set(Object.keys(POWER_OPS).filter((op) => POWER_OPS[op][3]));
// What the list's bulk bar offers (boot_disk is for one machine at a time).
export const BULK_OPS = ["on", "off", "soft_off", "cycle", "reset", "boot_pxe"];

export const opLabel = (op) => POWER_OPS[op]?.[0] || op;

/** "on", "off", "unknown", or "none" (no BMC configured): what the list filters by. */
export function powerKey(status) {
  if (!status || status.configured === false) return "none";
  return status.state === "on" || status.state === "off" ? status.state : "unknown";
}

export const watts = (w) => (w == null ? "" : `${Math.round(w)} W`);

/** The tooltip of a power dot: the last error and its reason, else when it was read. */
export function powerTitle(status) {
  const key = powerKey(status);
  if (key === "none") return "No BMC configured for this machine";
  if (status.error) return `${status.error}${status.reason ? ` (${status.reason})` : ""}`;
  if (!status.checked_at) return `${status.driver || "BMC"}: not read yet`;
  return `Power ${status.state}, read from the ${status.driver} BMC ${fmt.ago(status.checked_at)}`;
}

/** The list's power cell: a dot, the state, the draw (unless told not to); the error as the tooltip. */
export function powerCell(status, { withWatts = true } = {}) {
  const key = powerKey(status);
  if (key === "none") return h("span", { class: "pwr pwr-none", "data-power": "none", title: powerTitle(status) }, "No BMC");
  const failing = Boolean(status.error);
  return h("span", { class: `pwr pwr-${key}${failing ? " pwr-error" : ""}`, "data-power": key, title: powerTitle(status) },
    h("span", { class: "dot", "aria-hidden": "true" }),
    h("span", { class: "pwr-state" }, key),
    failing ? h("span", { class: "visually-hidden" }, ` (error: ${status.error})`) : null,
    withWatts && status.watts != null && key === "on" ? h("span", { class: "pwr-watts num" }, watts(status.watts)) : null);
}

/**
 * A power document from the stream ({op, data}: Live.document in dragonfly/power/service.py)
 * merged into the status known before: documents carry no supported operations, so those are
 * kept while the driver stays the same. Returns [status, complete]: complete is false when
 * the caller should ask the API for the whole status (a new record, another driver).
 */
export function mergePower(before, id, op, data) {
  if (op === "delete" || !data) {
    // The record was removed, or replaced (its document is rewritten at the next poll).
    return [{ machine: id, configured: false, driver: null, supports: [], actions: [], state: "unknown",
      health: "unknown", watts: null, watts_history: [], error: "", reason: "", checked_at: null }, false];
  }
  const same = before?.configured && before.driver === data.driver;
  return [{ ...data, configured: true, supports: same ? before.supports : [], actions: same ? before.actions : [] }, Boolean(same)];
}
