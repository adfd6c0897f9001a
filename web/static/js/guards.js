// Node locks and safety mode: lock marks in lists, the safety banner, and why destructive
// buttons are off right now.

import { api } from "./api.js";
import { when } from "./components.js";
import { APP } from "./data.js";
import { $, h, icon } from "./dom.js";
import { live } from "./live.js";

export const lockTitle = (lock) => `Locked by ${lock.by || "someone"}${lock.reason ? `: ${lock.reason}` : ""}`;

/** The small lock after a machine's name in lists (macro lock_mark in _ui.html). */
export function lockMark(lock) {
  return h("span", { class: "lock-mark", role: "img", "aria-label": "locked", title: lockTitle(lock) }, icon("lock"));
}

/** Put `lock`'s mark right after `anchor` (or take it away when unlocked). */
export function setLockMark(anchor, lock) {
  if (!anchor) return;
  const next = anchor.nextElementSibling?.classList.contains("lock-mark") ? anchor.nextElementSibling
    : anchor.querySelector(":scope > .lock-mark");
  if (!lock) { next?.remove(); return; }
  if (next) next.title = lockTitle(lock);
  else if (anchor.matches(".recent-name")) anchor.append(lockMark(lock));
  else anchor.after(lockMark(lock));
}

/** Safety mode as the page knows it; the banner and the machine page's buttons follow it live. */
export const SAFETY = {
  state: APP.safety || { enabled: false },
  listeners: [],
  on(fn) { this.listeners.push(fn); },
  set(state) {
    const was = this.state?.enabled;
    this.state = state || { enabled: false };
    renderSafetyBanner(this.state, !was && this.state.enabled);
    for (const fn of this.listeners) fn(this.state);
  },
};

function renderSafetyBanner(state, appeared) {
  const banner = $("#safety-banner");
  if (!banner) return;
  banner.hidden = !state.enabled;
  if (!state.enabled) return;
  const parts = [state.reason ? `Reason: ${state.reason}` : "No reason given"];
  if (state.by) parts.push(` · turned on by ${state.by}`);
  $('[data-field="safety-reason"]', banner).replaceChildren(...parts,
    ...(state.since ? [", ", when(state.since)] : []), ".");
  if (appeared) { banner.classList.remove("flash-in"); void banner.offsetWidth; banner.classList.add("flash-in"); }
}

/** Why destructive buttons are off right now ("" when they are not): the same words as machine.html. */
export function guardReason(lock) {
  const safety = SAFETY.state;
  if (safety?.enabled) return `Safety mode is on: reimage, delete and power actions are disabled${safety.reason ? ` (${safety.reason})` : ""}.`;
  if (lock) return `${lockTitle(lock)}. Unlock it first.`;
  return "";
}

export function initSafety() {
  live.on("safety", ({ op, data }) => SAFETY.set(op === "delete" || !data ? { enabled: false } : data));
  live.on("resync", async () => {
    try { SAFETY.set(await api("GET", "/api/safety")); } catch { /* keep what we have */ }
  });
}
