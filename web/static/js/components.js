// Shared components: mirrors of the macros in web/templates/_ui.html, for live updates.

import { h, icon } from "./dom.js";
import { fmt } from "./fmt.js";

export function badge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, h("span", { class: "dot", "aria-hidden": "true" }), state);
}

export function when(ts) {
  if (!ts) return h("span", { class: "faint" }, "never");
  return h("time", { datetime: fmt.iso(ts), "data-ts": ts, title: fmt.iso(ts) }, fmt.ago(ts));
}

export function progressBar(value, label, state = "running") {
  const bar = h("div", { class: "progress", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
    h("div", { class: "progress-fill" }));
  setProgress(bar, value, state);
  return bar;
}

export function setProgress(bar, value, state) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  bar.setAttribute("aria-valuenow", String(Math.round(v * 10) / 10));
  bar.firstElementChild.style.width = `${v}%`;
  bar.classList.toggle("running", state === "running");
  bar.classList.toggle("failed", state === "failed");
  bar.classList.toggle("done", state === "succeeded");
}

export function empty(iconName, title, text = "") {
  return h("div", { class: "empty" }, icon(iconName, "empty-icon"), h("p", { class: "empty-title" }, title), text ? h("p", { class: "muted" }, text) : null);
}

export const bump = (el) => {
  el.classList.remove("bump");
  void el.offsetWidth; // restart the animation
  el.classList.add("bump");
};
