// The machine page's header and facts: name, state badge and reason, power (the machine's
// own word, unless its BMC says), IP, OS, last seen, role, and the lifecycle action buttons
// the state allows.

import { badge, when } from "../components.js";
import { APP, CAN, templateName } from "../data.js";
import { $, $$, byData, capitalize, h, icon, setText } from "../dom.js";

const REASON_TITLE = { failed: "Deployment failed", maintenance: "In maintenance" };
const ACTION_STYLE = { reimage: "btn-danger", release: "btn-danger", adopt: "btn-primary", deploy: "btn-primary", resume: "btn-primary" };

/**
 * Returns applyMachine(m): draw a machine (an API answer or a live event) into the page and
 * merge it into ctx.machine. The hooks draw what other sections own.
 */
export function initHeader(ctx, { applyGuards, applyLock, renderTags, loadWorkflow }) {
  const allowedActions = (state) => Object.entries(ctx.transitions)
    .filter(([name, t]) => t.from.includes(state) && CAN.action(name)).map(([name]) => name);

  const renderActions = (state) => {
    const box = $("#actions");
    const wanted = allowedActions(state);
    const have = $$("[data-action]", box).map((b) => b.dataset.action);
    if (wanted.join() === have.join()) return;
    box.replaceChildren(...wanted.map((a) => h("button", { type: "button", class: `btn ${ACTION_STYLE[a] || ""}`.trim(), "data-action": a, "data-destructive": !!ctx.transitions[a].destructive },
      icon((APP.actions || {})[a] || "chevron-right"), capitalize(a))));
    applyGuards();
  };

  return (m) => {
    const before = ctx.machine;
    ctx.machine = { ...ctx.machine, ...m };
    for (const el of $$('[data-field="name"]')) setText(el, m.name);
    document.title = `${m.name} · Dragonfly`;
    if (before.state !== m.state || !$('[data-field="badge"] .badge')) $('[data-field="badge"]').replaceChildren(badge(m.state));
    if (!ctx.power?.configured) { // with a BMC, its reading wins (machine/power.js draws it)
      const power = $('[data-field="power"]');
      power.className = `power power-${m.power}`;
      setText(power.querySelector("span"), m.power);
    }
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
    if (m.workflow_id && m.workflow_id !== ctx.workflow?.id) loadWorkflow(m.workflow_id);
  };
}
