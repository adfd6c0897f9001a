// The machine page: its header and actions, lock and safety mode, the discovery agent,
// tags and role, the Deployment card, history, the boot timeline, power through its BMC, the
// BMC record and its enclosures (each in machine/), kept live from the event stream.

import { api } from "./api.js";
import { PAGE } from "./data.js";
import { $ } from "./dom.js";
import { SAFETY } from "./guards.js";
import { live } from "./live.js";
import { initActions } from "./machine/actions.js";
import { initAnswerPreview } from "./machine/answer.js";
import { initAgent } from "./machine/agent.js";
import { initBmc } from "./machine/bmc.js";
import { initBootTimeline } from "./machine/boot-timeline.js";
import { initEnclosures } from "./machine/enclosures.js";
import { initGuards } from "./machine/guards.js";
import { initHeader } from "./machine/header.js";
import { historyItem, initHistory } from "./machine/history.js";
import { initLabels } from "./machine/labels.js";
import { initPower } from "./machine/power.js";
import { initTools } from "./machine/tools.js";
import { initWorkflow, pastItem } from "./machine/workflow.js";
import { showError, toast } from "./toast.js";

export function initMachine() {
  // What the sections share; each reads it when it draws and writes what it owns.
  const ctx = {
    id: PAGE.machine.id,
    machine: PAGE.machine,
    transitions: Object.fromEntries((PAGE.transitions || []).map((t) => [t.name, t])), // in table order
    typeToConfirm: new Set(PAGE.type_to_confirm || []),
    workflow: PAGE.workflow || null,
    lock: PAGE.lock || null,
    agent: PAGE.agent || null,
    power: PAGE.power || null, // its BMC's power status; null: no power control here
    deleting: false,
  };
  const { id } = ctx;

  const agent = initAgent(ctx);
  initAnswerPreview(ctx);
  const { applyGuards, applyLock } = initGuards(ctx, agent.render);
  const { showWorkflow, loadWorkflow } = initWorkflow(ctx);
  const renderTags = initLabels(ctx);
  const applyMachine = initHeader(ctx, { applyGuards, applyLock, renderTags, loadWorkflow });
  initActions(ctx, applyMachine);
  initTools(ctx, applyLock);
  const boot = initBootTimeline(ctx);
  initHistory(ctx, agent.reloadSoon);
  const power = initPower(ctx);
  const bmc = initBmc(ctx, { changed: power.reload });
  const enclosures = initEnclosures(ctx);

  live.on("machine", ({ op, id: changed, data }) => {
    if (changed !== id) return;
    if (op === "delete") { if (!ctx.deleting) toast("This machine was deleted", "Someone removed it from the inventory.", "error"); return; }
    if (data) applyMachine(data);
    agent.reloadSoon(); // a heartbeat moved last_seen, or the state changed
  });
  live.on("lock", ({ op, id: changed, data }) => {
    if (changed === id) applyLock(op === "delete" ? null : data);
  });
  SAFETY.on(applyGuards);
  live.on("workflow", ({ data }) => {
    if (!data || data.machine_id !== id) return;
    const { workflow } = ctx;
    if (!workflow || data.id === workflow.id || data.created_at >= (workflow.created_at || 0)) showWorkflow(data);
  });
  live.on("resync", async () => {
    const url = `/api/machines/${encodeURIComponent(id)}`;
    try {
      const [m, events, flows] = await Promise.all([
        api("GET", url), api("GET", `${url}/history?limit=100`), api("GET", `${url}/workflows`)]);
      applyMachine(m);
      $("#history").replaceChildren(...events.map(historyItem));
      const current = flows.find((w) => w.id === m.workflow_id);
      if (current) showWorkflow(current);
      const past = flows.filter((w) => w !== current);
      $("#past-workflows").replaceChildren(...past.map(pastItem));
      $(".past-empty").hidden = past.length > 0;
    } catch (err) { showError(err, "Cannot refresh this machine"); }
    boot.reload();
    agent.reload();
  });

  boot.start();
  agent.schedule();
  power.render();
  bmc.load();
  enclosures.reload();
}
