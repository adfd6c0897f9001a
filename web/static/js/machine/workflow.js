// The machine page's Deployment card: the current workflow's steps and progress, and the
// past deployments below it.

import { api } from "../api.js";
import { progressBar, setProgress, when } from "../components.js";
import { templateName } from "../data.js";
import { $, $$, byData, h, icon, setText } from "../dom.js";
import { fmt } from "../fmt.js";
import { showError } from "../toast.js";

const stepIcon = (state) => ({ succeeded: icon("check-circle"), failed: icon("x-circle"), running: icon("spinner", "spin") }[state] || icon("circle-dashed"));
const stepState = (a) => (a.state === "running" ? `running · ${Math.round(a.progress)}%` : a.state);

const buildWorkflow = (wf) => h("div", {},
  h("div", { class: "wf-overall" },
    h("div", { class: "wf-line" },
      h("span", { class: "wf-stage", "data-field": "stage" }, wf.stage || wf.state),
      h("span", { class: "num strong", "data-field": "pct" }, fmt.pct(wf.progress))),
    progressBar(wf.progress, "Deployment progress", wf.state),
    h("div", { class: "wf-line muted small" },
      h("span", { "data-field": "bytes" }, ""), h("span", { "data-field": "eta" }, ""))),
  h("div", { class: "wf-error", "data-field": "error", hidden: true }, icon("x-circle"), h("p", {})),
  h("ol", { class: "steps-timeline", "data-field": "steps" }, wf.actions.map((a, i) =>
    h("li", { class: `step step-${a.state}`, "data-step": i },
      h("span", { class: "step-icon" }, stepIcon(a.state)),
      h("div", { class: "step-body" },
        h("div", { class: "step-head" }, h("span", { class: "step-name" }, a.name), h("span", { class: "step-state" }, stepState(a))),
        a.image ? h("div", { class: "step-image mono faint" }, a.image) : null)))));

/** Draw `wf` into the Deployment card, in place when it is the one already shown. */
const renderWorkflow = (wf) => {
  const box = $("#workflow");
  const summary = $('[data-field="wf-summary"]');
  if (!wf) return;
  if (box.dataset.wf !== wf.id || $$(".step", box).length !== wf.actions.length) {
    box.replaceChildren(...buildWorkflow(wf).childNodes);
    box.dataset.wf = wf.id;
  }
  summary.replaceChildren(h("span", { class: "wf-os" }, templateName(wf.template)),
    h("span", { class: `engine engine-${wf.engine}` }, wf.engine),
    h("span", { class: `wf-state wf-${wf.state}` }, wf.state));
  setText(byData(box, "field", "stage"), wf.stage || wf.state);
  setText(byData(box, "field", "pct"), fmt.pct(wf.progress));
  setProgress(box.querySelector(".wf-overall .progress"), wf.progress, wf.state);
  setText(byData(box, "field", "bytes"), `${fmt.bytes(wf.bytes_done)} of ${fmt.bytes(wf.bytes_total)}`);
  setText(byData(box, "field", "eta"), wf.state === "running" ? `ETA ${fmt.eta(wf.eta_seconds)}` : "");
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
    setText(li.querySelector(".step-state"), stepState(a));
    let bar = li.querySelector(".progress");
    if (a.state === "running") {
      if (!bar) { bar = progressBar(a.progress, `${a.name} progress`, "running"); li.querySelector(".step-body").append(bar); }
      setProgress(bar, a.progress, "running");
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

  const loadWorkflow = async (workflowId) => {
    try { showWorkflow(await api("GET", `/api/workflows/${encodeURIComponent(workflowId)}`)); } catch (err) { showError(err, "Cannot load the deployment"); }
  };

  return { showWorkflow, loadWorkflow };
}
