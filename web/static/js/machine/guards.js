// The machine page's lock and safety mode: the lock badge and callout, and destructive
// buttons (power actions and its enclosures' too) turned off with the reason.

import { when } from "../components.js";
import { $, $$, byData, setText } from "../dom.js";
import { guardReason, lockTitle } from "../guards.js";
import { POWER_OPS } from "../power.js";
import { toast } from "../toast.js";

const DELETE_TITLE = "Remove this machine from the inventory";

/** A destructive button that safety mode or the lock turned off says why instead. */
export const refused = (button) => {
  if (button.getAttribute("aria-disabled") !== "true") return false;
  toast(button.title || "Not possible right now", "", "error", "lock");
  return true;
};

/** Returns {applyGuards, applyLock}; ctx.lock is the machine's lock (or null). */
export function initGuards(ctx, renderAgent) {
  const applyGuards = () => {
    const reason = guardReason(ctx.lock);
    for (const button of $$("#actions [data-destructive], #tools [data-destructive]")) {
      if (reason) {
        button.setAttribute("aria-disabled", "true");
        button.title = reason;
      } else {
        button.removeAttribute("aria-disabled");
        if (button.dataset.tool === "delete") button.title = DELETE_TITLE; else button.removeAttribute("title");
      }
    }
    // Power through the BMC, and of its enclosures: every action is refused under a lock or
    // safety mode.
    for (const button of $$("#power-actions [data-guarded], .enclosure-actions [data-guarded]")) {
      if (reason) {
        button.setAttribute("aria-disabled", "true");
        button.title = reason;
      } else {
        button.removeAttribute("aria-disabled");
        button.title = button.dataset.help || POWER_OPS[button.dataset.powerOp]?.[2] || "";
      }
    }
    renderAgent();
  };

  const applyLock = (next) => {
    const focused = document.activeElement?.closest?.("[data-tool]")?.dataset.tool;
    const lock = ctx.lock = next || null;
    const badge = $("#lock-badge");
    badge.hidden = !lock;
    badge.title = lock ? lockTitle(lock) : "";
    const callout = $("#lock-callout");
    callout.hidden = !lock;
    if (lock) {
      setText(byData(callout, "field", "lock-by"), lock.by || "someone");
      byData(callout, "field", "lock-since").replaceChildren(...(lock.since ? ["· ", when(lock.since)] : []));
      setText(byData(callout, "field", "lock-reason"), lock.reason || "No reason given.");
    }
    for (const b of $$('[data-tool="lock"]')) b.hidden = Boolean(lock);
    for (const b of $$('[data-tool="unlock"]')) b.hidden = !lock;
    // Keep keyboard focus on the toggle that replaced the one just used.
    if (focused === "lock" || focused === "unlock") ($(`[data-tool="${lock ? "unlock" : "lock"}"]:not([hidden])`) || badge).focus?.();
    applyGuards();
  };

  return { applyGuards, applyLock };
}
