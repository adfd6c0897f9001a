// The machine page's discovery agent: whether one waits for orders (from its heartbeats), and
// the admin's reboot / power off / boot disk buttons, off with the guard's reason or the
// agent's absence.

import { api } from "../api.js";
import { PAGE, SERVER_SKEW } from "../data.js";
import { $, $$, capitalize, h, throttle } from "../dom.js";
import { guardReason } from "../guards.js";
import { modal } from "../dialogs.js";
import { showError, toast } from "../toast.js";
import { refused } from "./guards.js";

const AGENT_SAYS = {
  reboot: ["refresh", "The machine restarts and PXE-boots again: back into discovery, or to its disk if Dragonfly is deploying it or it is installed."],
  poweroff: ["power", "The machine switches off and stays off until someone powers it on (its BMC, the button or Wake-on-LAN)."],
  localboot: ["disk", "The machine restarts to leave discovery for its local disk. If it PXE-boots first, Dragonfly's boot script decides: discovered machines come back to discovery."],
};

/** Returns {render, reload, reloadSoon, schedule}; ctx.agent holds what the server said last. */
export function initAgent(ctx) {
  const AGENT_COMMANDS = PAGE.agent_commands || {};
  const NO_AGENT = new Set(PAGE.no_agent_states || []);
  let agentTimer = 0;
  const agentReason = () => (ctx.agent && !ctx.agent.live && ctx.agent.reason ? `${capitalize(ctx.agent.reason)}.` : "");

  const render = () => {
    const { agent } = ctx;
    const cell = $('[data-field="agent"]');
    const pending = agent?.pending;
    cell?.replaceChildren(pending
      ? h("span", { class: "pill pill-accent", title: `Queued by ${pending.by || "someone"}; the agent collects it at its next heartbeat` }, `${pending.command} queued`)
      : agent?.live ? h("span", { class: "pill pill-ok", title: "The discovery agent is waiting for orders" }, "waiting")
        : h("span", { class: "muted", title: agent?.reason || "" }, "—"));
    const box = $("#agent-tools");
    if (!box) return;
    box.hidden = NO_AGENT.has(ctx.machine.state);
    const reason = guardReason(ctx.lock) || agentReason();
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

  const reload = async () => {
    try {
      ctx.agent = await api("GET", `/api/machines/${encodeURIComponent(ctx.id)}/agent`);
    } catch { return; } // offline: asked again on reconnect
    render();
    schedule();
  };

  // Liveness lapses with time alone (no event says so): ask again when its window ends.
  const schedule = () => {
    const { agent } = ctx;
    clearTimeout(agentTimer);
    if (!agent?.live || agent.last_seen == null) return;
    const ends = (agent.last_seen + agent.window_seconds - SERVER_SKEW) * 1000 - Date.now();
    agentTimer = setTimeout(reload, Math.max(1000, ends + 500));
  };

  const send = async (command) => {
    const name = ctx.machine.name;
    const label = AGENT_COMMANDS[command]?.label || command;
    const [iconName, text] = AGENT_SAYS[command] || ["power", ""];
    const result = await modal({
      title: `${label}: ${name}`, iconName, confirmLabel: label, danger: command === "poweroff", inlineErrors: true,
      body: [h("p", {}, text), h("p", { class: "muted" }, "The discovery agent collects the command at its next heartbeat.")],
      onConfirm: () => api("POST", `/api/machines/${encodeURIComponent(ctx.id)}/agent/commands`, { command }),
    });
    if (!result) return;
    ctx.agent = result.agent;
    render();
    toast(`${label} queued for ${name}`, result.replaced && result.replaced.command !== command ? `It replaces the queued ${result.replaced.command}.` : "The agent collects it at its next heartbeat.");
  };

  const withdraw = async () => {
    let result;
    try {
      result = await api("DELETE", `/api/machines/${encodeURIComponent(ctx.id)}/agent/commands`);
    } catch (err) { showError(err, "Cannot withdraw"); return; }
    ctx.agent = result.agent;
    render();
    toast(result.cancelled ? `Withdrew the queued ${result.cancelled.command}` : "Nothing was queued any more", result.cancelled ? "" : "The agent had already collected it.");
  };

  $("#agent-tools")?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-agent-command], [data-agent-cancel]");
    if (!button || refused(button)) return;
    if (button.matches("[data-agent-cancel]")) withdraw(); else send(button.dataset.agentCommand);
  });

  return { render, reload, reloadSoon: throttle(reload, 2000), schedule };
}
