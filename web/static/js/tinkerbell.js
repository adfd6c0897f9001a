// The Tinkerbell page: the cluster's state and the deployments Tinkerbell runs, kept live from
// the event stream (tinkerbell_cluster and workflow events; no polling).

import { api } from "./api.js";
import { progressBar } from "./components.js";
import { PAGE } from "./data.js";
import { $, h, setText } from "./dom.js";
import { fmt } from "./fmt.js";
import { live } from "./live.js";

function drawCluster(cluster) {
  const card = $("#tb-cluster");
  if (!card || !cluster) return;
  card.dataset.state = cluster.state;
  const pill = card.querySelector("[data-field=state]");
  pill.className = `pill ${cluster.state === "ok" ? "pill-ok" : "pill-danger"}`;
  setText(pill, cluster.state);
  setText(card.querySelector("[data-field=message]"), cluster.message);
  setText(card.querySelector("[data-field=server]"), cluster.server || "—");
  setText(card.querySelector("[data-field=synced]"), cluster.synced_at ? fmt.ago(cluster.synced_at) : "never");
  const owned = Object.entries(cluster.owned || {}).sort().map(([kind, n]) => `${n} ${kind}`).join(", ");
  setText(card.querySelector("[data-field=owned]"), owned || "none yet");
}

const row = (d) => h("tr", { "data-wf": d.id },
  h("td", { "data-label": "Machine" }, h("a", { href: `/machines/${d.machine_id}` }, d.machine)),
  h("td", { "data-label": "Template", class: "mono" }, d.template),
  h("td", { "data-label": "Stage", "data-field": "stage" }, d.stage),
  h("td", { "data-label": "Progress" }, progressBar(d.progress, `Deployment of ${d.machine}`, d.state)),
  h("td", { "data-label": "Workflow", class: "mono small" }, d.object));

function drawDeployments(deployments) {
  const rows = $("#tb-rows");
  if (!rows) return;
  rows.replaceChildren(...deployments.map(row));
  $("#tb-deployments").hidden = !deployments.length;
  $("#tb-empty").hidden = Boolean(deployments.length);
}

export function initTinkerbell() {
  if (!PAGE.cluster) return;
  let deployments = PAGE.deployments || [];
  live.on("tinkerbell_cluster", ({ data }) => drawCluster({ ...PAGE.cluster, ...data }));
  live.on("workflow", ({ op, id, data }) => {
    const known = deployments.find((d) => d.id === id);
    if (op === "delete" || !data || data.engine !== "tinkerbell" || !["running", "pending"].includes(data.state)) {
      if (known) drawDeployments(deployments = deployments.filter((d) => d.id !== id));
      return;
    }
    const next = { id, machine_id: data.machine_id, machine: data.machine_name || data.machine_id, template: data.template,
      stage: data.stage || data.state, progress: data.progress || 0, state: data.state, object: `df-${id}` };
    deployments = known ? deployments.map((d) => (d.id === id ? next : d)) : [...deployments, next];
    drawDeployments(deployments);
  });
  live.on("resync", async () => drawCluster(await api("GET", "/api/tinkerbell")));
}
