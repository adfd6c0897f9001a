// How far a deployment is, honestly, for the dashboard's Active deployments and the machine
// page's timeline. A step with a measured fraction (bytes written of bytes to write) shows a
// real % bar; a step without one (booting, partitioning, waiting for the first boot) shows an
// animated barber pole instead of a made-up %. The ETA is the deployment timer's, learned from
// the history, with the basis it rests on ("from 14 debian-12 deployments on Dell R650").

import { progressBar, setProgress } from "../components.js";
import { h } from "../dom.js";
import { fmt } from "../fmt.js";

// The steps that write the image: the workflow's own byte counts measure them (the demo's
// simulator and older workflows keep the bytes on the workflow only).
const STREAMS = new Set(["stream-image", "stream image"]);

/** The running action's measured fraction (0..1), or null when nothing measures it. */
export function actionFraction(action, wf) {
  const total = Number(action.bytes_total) || 0;
  if (total > 0) return Math.min(1, (Number(action.bytes_done) || 0) / total);
  const wfTotal = Number(wf?.bytes_total) || 0;
  if (STREAMS.has(action.name) && wfTotal > 0) return Math.min(1, (Number(wf.bytes_done) || 0) / wfTotal);
  return null;
}

/** "about 4 min left", or "" when the deployment is not running or nothing is estimated. */
export function etaText(wf) {
  if (wf.state !== "running" || wf.eta_seconds == null) return "";
  return wf.eta_seconds < 1 ? "finishing" : `${fmt.about(wf.eta_seconds)} left`;
}

/** A running step's bar: a real % when measured, else the barber pole (no aria-valuenow). */
export function stepBar(action, wf, label) {
  const bar = progressBar(0, label, "running");
  setStepBar(bar, action, wf);
  return bar;
}

export function setStepBar(bar, action, wf) {
  const fraction = actionFraction(action, wf);
  const pole = fraction == null;
  bar.classList.toggle("is-pole", pole);
  bar.classList.toggle("is-measured", !pole);
  if (pole) {
    setProgress(bar, 100, "running");
    bar.removeAttribute("aria-valuenow");
    bar.setAttribute("aria-valuetext", "in progress; this step reports no measure of how far it is");
  } else {
    setProgress(bar, fraction * 100, "running");
    bar.removeAttribute("aria-valuetext");
  }
}

/** Where the running step lies on the whole deployment's bar (in %), when it is unmeasured. */
function poleSpan(wf) {
  const actions = wf.actions || [];
  const shares = actions.map((a) => Number(a.share) || 0);
  const sum = shares.reduce((x, y) => x + y, 0);
  let start = 0;
  for (const [i, a] of actions.entries()) {
    const share = sum ? (100 * shares[i]) / sum : 100 / actions.length;
    if (a.state === "running") {
      if (actionFraction(a, wf) != null) return null;
      const left = Math.min(98, Math.max(start, Number(wf.progress) || 0));
      return { left, width: Math.max(2, Math.min(100, start + share) - left), label: a.label || a.name };
    }
    start += share;
  }
  return null;
}

/** The whole deployment's bar: its progress, and the running step's span as a barber pole
 * when that step has no measure. */
export function setDeploymentBar(bar, wf) {
  setProgress(bar, wf.progress, wf.state);
  bar.classList.add("is-measured");
  const span = wf.state === "running" ? poleSpan(wf) : null;
  let pole = bar.querySelector(".progress-pole");
  if (!span) {
    pole?.remove();
    bar.removeAttribute("aria-valuetext");
    return;
  }
  if (!pole) {
    pole = h("div", { class: "progress-pole", "aria-hidden": "true" });
    bar.append(pole);
  }
  pole.style.left = `${span.left}%`;
  pole.style.width = `${span.width}%`;
  bar.setAttribute("aria-valuetext", `${Math.round(wf.progress)}%; now ${span.label}, which reports no measure of how far it is`);
}
