// The dashboard: deployments advancing live, the fleet's counts and recently seen machines,
// (dashboard/deployed.js) the Deployed card and the deployment charts, and
// (dashboard/boot-activity.js) the boot doctor's newest MACs and the boot edge's banners.

import { api } from "./api.js";
import { badge, bump, empty, progressBar, when } from "./components.js";
import { PAGE, templateName } from "./data.js";
import { initBootCard, initBootEdge } from "./dashboard/boot-activity.js";
import { initDeployed } from "./dashboard/deployed.js";
import { etaText, setDeploymentBar } from "./dashboard/progress.js";
import { $, $$, byData, h, setText, throttle } from "./dom.js";
import { fmt } from "./fmt.js";
import { lockMark, setLockMark } from "./guards.js";
import { live } from "./live.js";
import { showError } from "./toast.js";

/** The Deployments card: one row per running workflow, kept live from "workflow" events.
 * Returns reconcile(activeWorkflows), which brings the list in line with the server's view. */
function initDeployments(names) {
  const list = $("#deployments");
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
        h("span", { "data-field": "eta" }, "")));
  };

  // The timer's ETA ("about 4 min left"), with what it is learned from as the tooltip; the
  // bar marks a running step that reports no measure with a barber pole.
  const showEta = (li, wf) => {
    const eta = byData(li, "field", "eta");
    setText(eta, wf.state === "running" ? etaText(wf) || "ETA —" : wf.state);
    if (wf.state === "running" && wf.eta_basis) eta.title = `Estimated ${wf.eta_basis}`; else eta.removeAttribute("title");
    setDeploymentBar(li.querySelector(".progress"), wf);
  };

  const updateItem = (li, wf) => {
    setText(byData(li, "field", "pct"), fmt.pct(wf.progress));
    setText(byData(li, "field", "stage"), wf.state === "failed" ? `failed at ${wf.stage}` : wf.state === "succeeded" ? "done" : (wf.stage || wf.state));
    setText(byData(li, "field", "bytes"), `${fmt.bytes(wf.bytes_done)} / ${fmt.bytes(wf.bytes_total)}`);
    showEta(li, wf);
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
      showEta(li, data);
      list.append(li);
      nameFor(li, data.machine_id, data.machine_name);
    } else if (li) {
      updateItem(li, data);
      if (!active) finish(li, data);
    }
    sync();
  });

  // Reconcile deployments with the server's view (covers events missed while offline).
  return (activeWorkflows) => {
    const activeIds = new Set(activeWorkflows.map((w) => w.id));
    for (const li of $$(".deploy", list)) if (!activeIds.has(li.dataset.wf) && !finishing.has(li.dataset.wf)) li.remove();
    for (const wf of activeWorkflows) {
      const li = byData(list, "wf", wf.id);
      if (li) updateItem(li, wf); else { const item = deployItem(wf); showEta(item, wf); list.append(item); nameFor(item, wf.machine_id); }
    }
    sync();
  };
}

export function initDashboard() {
  const names = { ...(PAGE.names || {}) };
  const locks = new Map(Object.entries(PAGE.locks || {}));
  const reconcile = initDeployments(names);

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
    reconcile(stats.active_workflows);
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
  initDeployed();
  refresh(); // the server drew the deployments; this adds the ETAs' bases and barber poles
}
