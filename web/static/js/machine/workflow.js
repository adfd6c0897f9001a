// The machine page's Deployment card: the current workflow's steps and progress, and the
// past deployments below it. The ETA is the deployment timer's, with what it is learned from;
// a running step shows a real % only when something measures it (bytes), else a barber pole.

import { api } from "../api.js";
import { progressBar, when } from "../components.js";
import { actionFraction, etaText, setDeploymentBar, setStepBar, stepBar } from "../dashboard/progress.js";
import { templateName } from "../data.js";
import { modal } from "../dialogs.js";
import { $, $$, byData, capitalize, h, icon, setText } from "../dom.js";
import { fmt } from "../fmt.js";
import { showError } from "../toast.js";

const stepIcon = (state) => ({ succeeded: icon("check-circle"), failed: icon("x-circle"), running: icon("spinner", "spin") }[state] || icon("circle-dashed"));
const stepState = (a, wf) => {
  if (a.state !== "running") return a.state;
  const fraction = actionFraction(a, wf);
  return fraction == null ? "running" : `running · ${Math.round(fraction * 100)}%`;
};
/** How long a step took (or has been running), for the per-action timeline. */
const stepTime = (a) => {
  if (!a.started_at) return "";
  const end = a.finished_at || (a.state === "running" ? Date.now() / 1000 : null);
  return end ? fmt.eta(Math.max(0, end - a.started_at)) : "";
};
/** What a step says: its message, and for a stream its bytes and rate. */
const stepNote = (a) => {
  const parts = [];
  if (a.bytes_total && (a.state === "running" || a.bytes_done)) parts.push(`${fmt.bytes(a.bytes_done)} of ${fmt.bytes(a.bytes_total)}`);
  if (a.state === "running" && a.rate) parts.push(`${fmt.bytes(a.rate)}/s`);
  if (a.message) parts.push(a.message);
  return parts.join(" · ");
};

const buildWorkflow = (wf) => h("div", {},
  h("div", { class: "wf-overall" },
    h("div", { class: "wf-line" },
      h("span", { class: "wf-stage", "data-field": "stage" }, wf.stage || wf.state),
      h("span", { class: "num strong", "data-field": "pct" }, fmt.pct(wf.progress))),
    progressBar(wf.progress, "Deployment progress", wf.state),
    h("div", { class: "wf-line muted small" },
      h("span", { "data-field": "bytes" }, ""), h("span", { class: "wf-eta", "data-field": "eta" }, "")),
    h("p", { class: "wf-basis small faint", "data-field": "eta-basis", hidden: true })),
  h("div", { class: "wf-error", "data-field": "error", hidden: true }, icon("x-circle"), h("p", {})),
  h("div", { class: "wf-installed", "data-field": "installed", hidden: true }),
  h("ol", { class: "steps-timeline", "data-field": "steps" }, wf.actions.map((a, i) =>
    h("li", { class: `step step-${a.state}`, "data-step": i },
      h("span", { class: "step-icon" }, stepIcon(a.state)),
      h("div", { class: "step-body" },
        h("div", { class: "step-head" }, h("span", { class: "step-name" }, a.label || a.name),
          h("span", { class: "step-state" }, stepState(a, wf)), h("span", { class: "step-time num muted small" }, stepTime(a))),
        h("div", { class: "step-note muted small" }, stepNote(a)),
        a.image ? h("div", { class: "step-image mono faint" }, a.image) : null,
        h("details", { class: "step-log", hidden: !a.log }, h("summary", { class: "small" }, wf.engine === "simple" ? "Installer stages" : "Agent log"),
          h("pre", { class: "mono small" }, a.log || "")))))),
  h("div", { class: "wf-tools", "data-field": "tools", hidden: true },
    h("button", { type: "button", class: "btn btn-ghost", "data-abort": "" }, icon("x-circle"), "Abort deployment")));

/** What the ETA is learned from, as a sentence: "Estimated from 14 debian-12 deployments on …". */
const basisText = (basis) => (basis.startsWith("from ") ? `Estimated ${basis}` : capitalize(basis));

/** The host keys and name the installed OS reported when it phoned home. */
const installedFacts = (installed) => h("dl", { class: "facts small" },
  h("div", {}, h("dt", {}, "Phoned home as"), h("dd", { class: "mono" }, installed.fqdn || installed.hostname || "—")),
  ...Object.entries(installed.host_keys || {}).map(([kind, key]) =>
    h("div", {}, h("dt", {}, kind.replace("pub_key_", "").toUpperCase()), h("dd", { class: "mono faint" }, key))));

/** Draw `wf` into the Deployment card, in place when it is the one already shown. */
const renderWorkflow = (wf, rebuild = false) => {
  const box = $("#workflow");
  const summary = $('[data-field="wf-summary"]');
  if (!wf) return;
  if (rebuild || box.dataset.wf !== wf.id || $$(".step", box).length !== wf.actions.length || !byData(box, "field", "tools")) {
    box.replaceChildren(...buildWorkflow(wf).childNodes);
    box.dataset.wf = wf.id;
  }
  summary.replaceChildren(h("span", { class: "wf-os" }, templateName(wf.template)),
    h("span", { class: `engine engine-${wf.engine}` }, wf.engine),
    h("span", { class: `wf-state wf-${wf.state}` }, wf.state));
  setText(byData(box, "field", "stage"), wf.stage || wf.state);
  setText(byData(box, "field", "pct"), fmt.pct(wf.progress));
  setDeploymentBar(box.querySelector(".wf-overall .progress"), wf);
  setText(byData(box, "field", "bytes"), `${fmt.bytes(wf.bytes_done)} of ${fmt.bytes(wf.bytes_total)}`);
  // "about 4 min left", and below it what the estimate is learned from.
  const eta = etaText(wf);
  setText(byData(box, "field", "eta"), eta);
  const basis = byData(box, "field", "eta-basis");
  basis.hidden = !(eta && wf.eta_basis);
  setText(basis, basis.hidden ? "" : basisText(wf.eta_basis));
  const installed = byData(box, "field", "installed");
  installed.hidden = !(wf.installed && wf.installed.at);
  if (!installed.hidden) installed.replaceChildren(installedFacts(wf.installed));
  // Only the engine's deployments (they have a prepare-image step) can be aborted from here.
  byData(box, "field", "tools").hidden = !(wf.state === "running" && wf.actions.some((a) => a.name === "prepare-image" || a.name === "prepare-installer"));
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
    setText(li.querySelector(".step-state"), stepState(a, wf));
    setText(li.querySelector(".step-time"), stepTime(a));
    setText(li.querySelector(".step-note"), stepNote(a));
    const logBox = li.querySelector(".step-log");
    logBox.hidden = !a.log;
    setText(logBox.querySelector("pre"), a.log || "");
    let bar = li.querySelector(".progress");
    if (a.state === "running") {
      if (!bar) { bar = stepBar(a, wf, `${a.label || a.name} progress`); li.querySelector(".step-body").append(bar); }
      setStepBar(bar, a, wf);
    } else if (bar) {
      bar.remove();
    }
  });
};

/** A finished (or replaced) deployment in the past list. */
export const pastItem = (w) => h("li", { class: "past", "data-wf": w.id },
  h("span", { class: `wf-state wf-${w.state}` }, w.state),
  h("span", { class: "past-os" }, templateName(w.template)),
  h("span", { class: `engine engine-${w.engine}` }, w.engine),
  h("span", { class: "past-when muted" }, when(w.finished_at || w.created_at)),
  w.error ? h("p", { class: "past-error" }, w.error) : null);

/** Returns {showWorkflow, loadWorkflow}; ctx.workflow is the one shown. */
export function initWorkflow(ctx) {
  /** A new workflow replaced the shown one: the old one moves to the past list. */
  const showWorkflow = (wf) => {
    const { workflow } = ctx;
    if (workflow && workflow.id !== wf.id) {
      const past = $("#past-workflows");
      byData(past, "wf", workflow.id)?.remove();
      past.prepend(pastItem(workflow));
      $(".past-empty").hidden = true;
    }
    ctx.workflow = wf;
    renderWorkflow(wf);
  };

  $("#workflow").addEventListener("click", async (e) => {
    if (!e.target.closest("[data-abort]") || !ctx.workflow) return;
    const done = await modal({
      title: "Abort this deployment", iconName: "x-circle", danger: true, confirmLabel: "Abort",
      body: [h("p", {}, "The machine becomes Failed with “aborted”; the agent stops at its next step. Deploy again to retry.")],
      onConfirm: () => api("POST", `/api/workflows/${encodeURIComponent(ctx.workflow.id)}/abort`, {}),
    });
    if (done) showWorkflow(done);
  });

  // The server drew the card; draw it again with the measured bars and the ETA's basis.
  if (ctx.workflow) renderWorkflow(ctx.workflow, true);

  const loadWorkflow = async (workflowId) => {
    try { showWorkflow(await api("GET", `/api/workflows/${encodeURIComponent(workflowId)}`)); } catch (err) { showError(err, "Cannot load the deployment"); }
  };

  return { showWorkflow, loadWorkflow };
}
