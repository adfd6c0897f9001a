// The machine page's Power card: state, health and draw from its BMC with the draw's recent
// history, the last error and its reason, and (admins) exactly the actions its driver
// supports, each confirmed when it interrupts the machine and toasted with its outcome. Kept
// live from the "power" documents on the event stream.

import { api } from "../api.js";
import { empty, when } from "../components.js";
import { APP, SERVER_SKEW } from "../data.js";
import { modal } from "../dialogs.js";
import { $, h, icon, setText, svg, throttle } from "../dom.js";
import { guardReason } from "../guards.js";
import { live } from "../live.js";
import { DISRUPTIVE, POWER_OPS, mergePower, opLabel, powerCell, watts } from "../power.js";
import { showError, toast } from "../toast.js";
import { refused } from "./guards.js";

const CAN_POWER = APP.can?.power !== false;

/** An inline SVG sparkline of [[timestamp, watts], ...]; null with fewer than two readings. */
export function sparkline(history) {
  const points = (history || []).filter((s) => Array.isArray(s) && s.length === 2 && s[1] != null);
  if (points.length < 2) return null;
  const W = 240, H = 44, PAD = 3;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const ws = points.map((s) => s[1]);
  const lo = Math.min(...ws), hi = Math.max(...ws);
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * W : W);
  const y = (w) => (hi > lo ? PAD + (1 - (w - lo) / (hi - lo)) * (H - 2 * PAD) : H / 2);
  const line = points.map(([t, w]) => `${x(t).toFixed(1)},${y(w).toFixed(1)}`).join(" ");
  const minutes = Math.max(1, Math.round((t1 - t0) / 60));
  const label = `Power draw over the last ${minutes} min: ${watts(lo)} to ${watts(hi)}, now ${watts(ws[ws.length - 1])}`;
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  const title = svg("title");
  title.textContent = label;
  chart.append(title,
    svg("polygon", { class: "spark-area", points: `0,${H} ${line} ${W},${H}` }),
    svg("polyline", { class: "spark-line", points: line, "vector-effect": "non-scaling-stroke" }));
  return h("figure", { class: "spark-wrap", "data-field": "power-spark", "data-points": points.length }, chart,
    h("figcaption", { class: "spark-caption faint small" },
      h("span", {}, `${watts(lo)} – ${watts(hi)}`), h("span", {}, `last ${minutes} min`)));
}

/**
 * Returns {render, reload}. ctx.power is the machine's power status (GET /api/machines/{id}/power)
 * or null when this instance has no power control; ctx.lock and safety mode turn the buttons off.
 */
export function initPower(ctx) {
  const card = $("#power-card");
  const body = $("#power-body");
  let pending = null; // {op, at}: an action sent, until the BMC's next reading

  const renderFact = () => {
    const fact = $('[data-field="power"]');
    if (!fact) return;
    const status = ctx.power;
    const shown = status?.configured ? status.state : ctx.machine.power;
    fact.className = `power power-${shown}`;
    if (status?.configured) fact.title = `From its ${status.driver} BMC`; else fact.removeAttribute("title");
    setText(fact.querySelector("span"), shown);
  };

  const buttons = (status) => {
    if (!CAN_POWER || !status.actions?.length) return null;
    const reason = guardReason(ctx.lock);
    return h("div", { class: "btn-row power-actions", id: "power-actions", role: "group", "aria-label": "Power actions" },
      status.actions.filter((op) => POWER_OPS[op]).map((op) => h("button", {
        type: "button", class: "btn btn-sm", "data-power-op": op, "data-guarded": true,
        "aria-disabled": reason ? "true" : null, title: reason || POWER_OPS[op][2],
      }, icon(POWER_OPS[op][1]), POWER_OPS[op][0])));
  };

  const render = () => {
    renderFact();
    if (!card) return;
    const status = ctx.power;
    const head = $('[data-field="power-driver"]', card);
    head.replaceChildren(status?.configured ? h("span", { class: "pill", title: "The BMC's power driver" }, status.driver) : "");
    if (!status?.configured) {
      body.replaceChildren(empty("power", "No BMC configured", CAN_POWER ? "Set up its BMC below to control its power from here."
        : "An administrator can set up its BMC for power control."));
      return;
    }
    if (pending && status.checked_at && status.checked_at > pending.at) pending = null;
    const focused = document.activeElement?.dataset?.powerOp;
    body.replaceChildren(...[
      h("dl", { class: "power-facts" },
        h("div", {}, h("dt", {}, "State"), h("dd", { "data-field": "power-state" }, powerCell(status, { withWatts: false }),
          pending ? h("span", { class: "power-pending faint small" }, icon("spinner", "spin"), `${opLabel(pending.op)} sent`) : null)),
        h("div", {}, h("dt", {}, "Health"), h("dd", { "data-field": "power-health" }, h("span", { class: `health health-${status.health}` }, status.health))),
        h("div", {}, h("dt", {}, "Draw"), h("dd", { class: "num", "data-field": "power-watts" }, status.watts != null ? watts(status.watts) : "—")),
        h("div", {}, h("dt", {}, "Checked"), h("dd", { "data-field": "power-checked" }, when(status.checked_at)))),
      sparkline(status.watts_history),
      status.error ? h("div", { class: "power-error", role: "status", "data-field": "power-error" }, icon("alert"),
        h("p", {}, h("span", { class: "power-error-text" }, status.error),
          status.reason ? [" ", h("span", { class: "pill pill-danger", title: "Why, in one word" }, status.reason)] : null,
          status.failures > 1 ? h("span", { class: "faint small" }, ` · ${status.failures} checks in a row`) : null)) : null,
      buttons(status)].filter(Boolean));
    if (focused) $(`[data-power-op="${focused}"]`, body)?.focus();
  };

  const reload = async () => {
    if (!card) return;
    try {
      ctx.power = await api("GET", `/api/machines/${encodeURIComponent(ctx.id)}/power`);
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load the power status");
      return;
    }
    render();
  };
  const reloadSoon = throttle(reload, 1000);

  const act = async (op) => {
    const name = ctx.machine.name;
    const [label, iconName, help] = POWER_OPS[op] || [op, "power", ""];
    const url = `/api/machines/${encodeURIComponent(ctx.id)}/power/${op}`;
    let result = null;
    try {
      result = DISRUPTIVE.has(op)
        ? await modal({
          title: `${label}: ${name}`, iconName, danger: true, confirmLabel: label,
          body: [h("p", {}, help), h("p", { class: "muted" }, `Through its ${ctx.power.driver} BMC. Locks and safety mode refuse it.`)],
          onConfirm: () => api("POST", url),
        })
        : await api("POST", url);
    } catch (err) {
      showError(err, `${label} failed`);
      return;
    }
    if (!result) return; // cancelled
    pending = { op, at: Date.now() / 1000 + SERVER_SKEW }; // in the server's clock, like checked_at
    render();
    toast(`${label}: sent to ${name}`, op.startsWith("boot_") ? "It applies at the machine's next boot."
      : "The state here follows when the BMC reports it.", "ok", iconName);
  };

  card?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-power-op]");
    if (button && !refused(button)) act(button.dataset.powerOp);
  });

  live.on("power", ({ op, id, data }) => {
    if (id !== ctx.id) return;
    const [next, complete] = mergePower(ctx.power, id, op, data);
    if (!complete) { reloadSoon(); return; } // a new or removed record: ask for the whole status
    ctx.power = next;
    render();
  });
  live.on("resync", reload);

  return { render, reload };
}
