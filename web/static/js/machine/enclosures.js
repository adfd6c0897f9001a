// The machine page's Enclosures card: the OpenJBOD enclosures holding this machine's disks,
// their state and health asked of their controllers (GET /api/machines/{id}/enclosures), the
// last error and its reason, and (admins) on, off and cycle. Off and cycle pull the disks from
// under every attached machine: confirmed first, naming them. Safety mode or a lock on any
// attached machine refuses them (423): the refusal shows here, in the server's words.

import { api } from "../api.js";
import { when } from "../components.js";
import { APP, PAGE } from "../data.js";
import { modal } from "../dialogs.js";
import { $, h, icon } from "../dom.js";
import { fmt } from "../fmt.js";
import { guardReason } from "../guards.js";
import { live } from "../live.js";
import { opLabel, powerCell } from "../power.js";
import { showError, toast } from "../toast.js";
import { refused } from "./guards.js";

const CAN_SWITCH = APP.can?.admin !== false; // enclosure power is for admins
// {op: [sprite icon, what it does, whether it takes disks away (confirmed first)]}
const OPS = {
  on: ["power", "Switches the enclosure's power supply on: its disks come back for every attached machine.", false],
  off: ["power", "Cuts the enclosure's power supply: its disks vanish at once from under every attached machine.", true],
  cycle: ["refresh", "Switches the enclosure's power supply off and on again: every attached machine loses its disks meanwhile.", true],
};
const SETTLES = { on: "on", off: "off", cycle: "on" }; // the state an operation ends in
const WATCH_EVERY = 2000; // ms between readings while an operation settles
const WATCH_FOR = 30000; // ms before the card stops waiting for it

/** Returns {reload}: asks the controllers again (after an action, and on resync). */
export function initEnclosures(ctx) {
  const card = $("#enclosure-card");
  if (!card) return { reload: async () => {} };
  const body = $("#enclosure-body", card);
  const names = new Map(); // machine id -> name
  let order = []; // enclosure names, as the server lists them
  for (const e of PAGE.enclosures || []) {
    order.push(e.name);
    for (const m of e.machines) names.set(m.id, m.name);
  }
  let statuses = null; // name -> status; null until the controllers answered
  const refusals = new Map(); // name -> {op, message}: the last 423
  const pending = new Map(); // name -> {op, until}
  let timer = 0;

  const nameOf = (id) => names.get(id) || id;
  const machinesOf = (name) => statuses?.get(name)?.machines
    || (PAGE.enclosures || []).find((e) => e.name === name)?.machines.map((m) => m.id) || [];
  const link = (id) => h("a", { class: "chip tag", href: `/machines/${encodeURIComponent(id)}`, "data-machine": id }, nameOf(id));

  const stateCell = (status) => {
    const cell = powerCell({ ...status, configured: true, driver: "openjbod" }, { withWatts: false });
    cell.title = status.error ? `${status.error}${status.reason ? ` (${status.reason})` : ""}`
      : `Power ${status.state}, read from its controller ${fmt.ago(status.checked_at)}`;
    return cell;
  };

  const buttons = (name, status) => {
    if (!CAN_SWITCH) return null;
    const reason = guardReason(ctx.lock);
    return h("div", { class: "btn-row enclosure-actions", role: "group", "aria-label": `Power of enclosure ${name}` },
      status.actions.filter((op) => OPS[op]).map((op) => h("button", {
        type: "button", class: "btn btn-sm", "data-enclosure-op": op, "data-guarded": true, "data-help": OPS[op][1],
        "aria-disabled": reason ? "true" : null, title: reason || OPS[op][1],
      }, icon(OPS[op][0]), opLabel(op))));
  };

  const view = (name) => {
    const status = statuses?.get(name);
    const others = machinesOf(name).filter((id) => id !== ctx.id);
    const waiting = pending.get(name);
    const refusal = refusals.get(name);
    return h("article", { class: "enclosure", "data-enclosure": name, "aria-label": `Enclosure ${name}` },
      h("div", { class: "enclosure-head" }, h("h3", { class: "enclosure-name" }, name),
        h("span", { class: "pill", title: "Switched through its OpenJBOD controller" }, "openjbod")),
      status ? h("dl", { class: "power-facts" },
        h("div", {}, h("dt", {}, "State"), h("dd", { "data-field": "enclosure-state" }, stateCell(status),
          waiting ? h("span", { class: "power-pending faint small" }, icon("spinner", "spin"), `${opLabel(waiting.op)} sent`) : null)),
        h("div", {}, h("dt", {}, "Health"), h("dd", { "data-field": "enclosure-health" }, h("span", { class: `health health-${status.health}` }, status.health))),
        h("div", { class: "wide" }, h("dt", {}, "Also holds the disks of"), h("dd", { class: "enclosure-machines", "data-field": "enclosure-machines" },
          others.length ? others.map(link) : h("span", { class: "faint" }, "no other machine"))),
        h("div", {}, h("dt", {}, "Checked"), h("dd", { "data-field": "enclosure-checked" }, when(status.checked_at))))
        : h("p", { class: "muted small" }, icon("spinner", "spin"), " Asking its controller…"),
      status?.error ? h("div", { class: "power-error", role: "status", "data-field": "enclosure-error" }, icon("alert"),
        h("p", {}, h("span", { class: "power-error-text" }, status.error),
          status.reason ? [" ", h("span", { class: "pill pill-danger", title: "Why, in one word" }, status.reason)] : null)) : null,
      refusal ? h("div", { class: "callout callout-lock enclosure-refusal", role: "alert", "data-field": "enclosure-refusal" },
        icon("lock", "callout-icon"),
        h("div", {}, h("p", { class: "callout-title" }, `${opLabel(refusal.op)} refused`),
          h("p", { class: "callout-text", "data-field": "enclosure-refusal-text" }, refusal.message))) : null,
      status ? buttons(name, status) : null);
  };

  const render = () => {
    const focused = document.activeElement?.closest?.("[data-enclosure-op]");
    const where = focused && [focused.closest("[data-enclosure]")?.dataset.enclosure, focused.dataset.enclosureOp];
    body.replaceChildren(...(order.length ? order.map(view)
      : [h("p", { class: "muted small" }, "No longer attached to any enclosure.")]));
    if (where) $(`[data-enclosure="${CSS.escape(where[0])}"] [data-enclosure-op="${where[1]}"]`, body)?.focus();
  };

  const reload = async () => {
    clearTimeout(timer);
    timer = 0;
    let list;
    try {
      list = await api("GET", `/api/machines/${encodeURIComponent(ctx.id)}/enclosures`);
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot ask the enclosures");
      return;
    }
    statuses = new Map(list.map((s) => [s.name, s]));
    order = list.map((s) => s.name);
    const now = Date.now();
    for (const [name, p] of pending) {
      const status = statuses.get(name);
      if (!status || status.state === SETTLES[p.op] || now > p.until) pending.delete(name);
    }
    render();
    if (pending.size) timer = setTimeout(reload, WATCH_EVERY);
  };

  const act = async (name, op) => {
    const [iconName, help, disruptive] = OPS[op];
    const label = opLabel(op);
    const url = `/api/enclosures/${encodeURIComponent(name)}/power/${op}`;
    // The refusal is shown in the card, not as a toast; any other failure is a toast.
    const send = () => api("POST", url, undefined, { quiet: true }).catch((error) => ({ error }));
    const attached = machinesOf(name).map(nameOf);
    const result = disruptive
      ? await modal({
        title: `${label}: enclosure ${name}`, iconName, danger: true, confirmLabel: label,
        body: [h("p", {}, help),
          h("p", {}, `Attached: ${attached.join(", ") || "no machine"}.`),
          h("p", { class: "muted" }, "Safety mode, or a lock on any of them, refuses it.")],
        onConfirm: send,
      })
      : await send();
    if (!result) return; // cancelled
    refusals.delete(name);
    if (result.error) {
      const err = result.error;
      if (err.status === 423) refusals.set(name, { op, message: err.message });
      else showError(err, `${label} of enclosure ${name} failed`);
      render();
      if (err.status !== 423) reload(); // the controller's error shows in the card
      return;
    }
    pending.set(name, { op, until: Date.now() + WATCH_FOR });
    toast(`${label}: sent to enclosure ${name}`, "The state here follows when its controller reports it.", "ok", iconName);
    reload();
  };

  card.addEventListener("click", (e) => {
    const button = e.target.closest("[data-enclosure-op]");
    if (!button || refused(button)) return;
    act(button.closest("[data-enclosure]").dataset.enclosure, button.dataset.enclosureOp);
  });
  live.on("resync", reload);

  return { reload };
}
