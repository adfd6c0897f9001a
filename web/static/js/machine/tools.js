// The machine page's tools: lock, unlock and delete.

import { api } from "../api.js";
import { modal } from "../dialogs.js";
import { $, h } from "../dom.js";
import { showError, toast } from "../toast.js";
import { refused } from "./guards.js";

/** `applyLock` draws the machine's new lock (or null). Sets ctx.deleting while it deletes. */
export function initTools(ctx, applyLock) {
  const lockUrl = () => `/api/machines/${encodeURIComponent(ctx.id)}/lock`;

  const lockMachine = async () => {
    const reason = h("input", { id: "lock-reason", name: "reason", maxlength: "500", placeholder: "e.g. production database, ask Dana first", autocomplete: "off" });
    const result = await modal({
      title: `Lock ${ctx.machine.name}`, iconName: "lock", confirmLabel: "Lock", inlineErrors: true,
      body: [h("p", {}, "While it is locked, nobody can reimage, release, deploy over, delete or power-control this machine. Tags and role can still be edited."),
        h("div", { class: "field" }, h("label", { for: "lock-reason" }, "Reason (shown to everyone)"), reason)],
      onConfirm: (form) => api("PUT", lockUrl(), { reason: form.elements.reason.value.trim() }),
    });
    if (result) {
      applyLock(result.lock);
      toast(`Locked ${ctx.machine.name}`, result.lock?.reason || "");
    }
  };

  const unlockMachine = async () => {
    try {
      await api("DELETE", lockUrl());
    } catch (err) { showError(err, "Cannot unlock"); return; }
    applyLock(null);
    toast(`Unlocked ${ctx.machine.name}`, "Reimage, delete and power actions are possible again.");
  };

  const deleteMachine = async () => {
    const name = ctx.machine.name;
    const done = await modal({
      title: `Delete ${name}`, iconName: "trash", danger: true, confirmLabel: "Delete machine", requireText: name,
      body: [h("p", {}, "Removes this machine, its history and its deployments from Dragonfly. The hardware is not touched: if it PXE-boots again, it is discovered as a new machine.")],
      onConfirm: async () => {
        ctx.deleting = true;
        try { return await api("DELETE", `/api/machines/${encodeURIComponent(ctx.id)}`); } catch (err) { ctx.deleting = false; throw err; }
      },
    });
    if (done) location.assign(`/machines?deleted=${encodeURIComponent(name)}`);
  };

  $("#tools")?.addEventListener("click", (e) => {
    const button = e.target.closest("[data-tool]");
    if (!button || refused(button)) return;
    ({ lock: lockMachine, unlock: unlockMachine, delete: deleteMachine })[button.dataset.tool]?.();
  });
}
