// The machine page's Boot timeline: the boot doctor's steps for each of this machine's NICs,
// the diagnosis when a boot stopped, and the step that never came.

import { api } from "../api.js";
import { bootDeadlines, bootFacts, DONE_STEPS, ERROR_STEPS, lastStep, NEXT_STEP, seconds, stepTone } from "../boot.js";
import { when } from "../components.js";
import { PAGE } from "../data.js";
import { $, capitalize, h, icon } from "../dom.js";
import { fmt } from "../fmt.js";
import { live } from "../live.js";
import { showError } from "../toast.js";

const bootStepEl = (step, i, steps, diagnosis, isNew) => {
  const isLast = i === steps.length - 1;
  const tone = stepTone(step, isLast, diagnosis);
  const facts = bootFacts(step);
  const gap = i > 0 ? step.at - steps[i - 1].last_at : null;
  return h("li", { class: `bstep bstep-${tone}${isNew ? " bstep-new" : ""}`, "data-step": step.step },
    h("span", { class: `bdot tone-${tone}`, "aria-hidden": "true" }),
    h("div", { class: "bstep-body" },
      h("div", { class: "bstep-head" },
        h("span", { class: "bstep-label" }, step.label),
        step.count > 1 ? h("span", { class: "bstep-count", title: `Seen ${step.count} times, the last ${fmt.ago(step.last_at)}` }, `×${step.count}`) : null),
      facts.length ? h("div", { class: "bstep-facts" }, facts) : null),
    h("div", { class: "bstep-time" }, when(step.at),
      gap != null && gap >= 0.1 ? h("span", { class: "bstep-gap faint", title: "after the previous step" }, `+${seconds(Math.max(0, gap))}`) : null));
};

/** One NIC's steps, with the missing next step after a diagnosed stall. */
const nicSection = (t, before, several) => {
  const last = lastStep(t);
  const items = t.steps.map((step, i) => bootStepEl(step, i, t.steps, t.diagnosis, before != null && i >= before));
  if (t.diagnosis && NEXT_STEP[last.step] && !ERROR_STEPS.has(last.step)) {
    items.push(h("li", { class: "bstep bstep-missing" },
      h("span", { class: "bdot tone-missing", "aria-hidden": "true" }),
      h("div", { class: "bstep-body" }, h("div", { class: "bstep-head" }, h("span", { class: "bstep-label" }, `${NEXT_STEP[last.step]} never came`))),
      h("div", { class: "bstep-time" })));
  }
  return h("section", { class: "boot-nic", "aria-label": `Boot steps of ${t.mac}` },
    several ? h("div", { class: "boot-nic-head" }, icon("network"), "NIC ", h("span", { class: "mono" }, t.mac)) : null,
    h("ol", { class: "bsteps" }, items));
};

/** Draws the timeline from the page data and follows "boot" events; returns {reload, start}. */
export function initBootTimeline(ctx) {
  const bootBox = $("#boot-timeline");
  const bootMacs = new Set(PAGE.boot_macs || []);
  const timelines = new Map((PAGE.boot || []).map((t) => [t.mac, t]));
  const seenSteps = new Map(); // mac -> steps drawn, to flash the new ones

  const render = () => {
    const list = [...timelines.values()].filter((t) => t.steps.length && bootMacs.has(t.mac));
    if (!list.length) { bootBox.replaceChildren(); return; }
    const stopped = list.filter((t) => t.diagnosis);
    const done = list.some((t) => DONE_STEPS.has(lastStep(t).step));
    const status = stopped.length ? h("span", { class: "pill pill-danger" }, "stopped")
      : done ? h("span", { class: "pill pill-ok" }, "checked in") : h("span", { class: "pill pill-accent" }, "booting");
    const nodes = [h("header", { class: "card-head" },
      h("h2", {}, icon("zap"), "Boot timeline"),
      h("span", { class: "card-head-end" }, list.length === 1 ? h("span", { class: "mono muted small" }, list[0].mac) : null, status))];
    for (const t of stopped) {
      nodes.push(h("div", { class: "callout callout-failed boot-diagnosis", role: "status" },
        icon("alert", "callout-icon"),
        h("div", {},
          h("p", { class: "callout-title" }, `Boot stopped after “${lastStep(t).label}”${list.length > 1 ? ` on ${t.mac}` : ""}`),
          h("p", { class: "callout-text" }, capitalize(t.diagnosis)))));
    }
    for (const t of list) {
      nodes.push(nicSection(t, seenSteps.get(t.mac), list.length > 1));
      seenSteps.set(t.mac, t.steps.length);
    }
    bootBox.replaceChildren(...nodes);
  };

  const reload = async () => {
    if (!PAGE.boot_enabled) return;
    try {
      const list = await api("GET", `/api/machines/${encodeURIComponent(ctx.id)}/boot`);
      timelines.clear();
      for (const t of list) timelines.set(t.mac, t);
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load the boot timeline"); // offline: reloaded on reconnect
      return;
    }
    render();
    deadlines(timelines.values());
  };
  const deadlines = bootDeadlines(reload);

  live.on("boot", ({ op, id: mac, data }) => {
    if (!bootMacs.has(mac)) return;
    if (op === "delete" || !data) timelines.delete(mac); else timelines.set(mac, data);
    render();
    deadlines(timelines.values());
  });

  return { reload, start: () => { render(); deadlines(timelines.values()); } };
}
