// The machine page's lifecycle actions (adopt, deploy, reimage, release, maintenance,
// resume), each confirmed in a dialog when it needs a choice or wipes a disk; a reimage's
// network boot through the BMC is toasted with its outcome.

import { api } from "../api.js";
import { APP } from "../data.js";
import { modal } from "../dialogs.js";
import { $, h } from "../dom.js";
import { opLabel } from "../power.js";
import { showError, toast } from "../toast.js";
import { deployDialog } from "./deploy.js";
import { refused } from "./guards.js";

const SAID = {
  adopt: (name) => [`Adopted ${name}`, "It is ready to deploy."],
  deploy: (name) => [`Deploying ${name}`, "Progress shows under Deployment."],
  reimage: (name) => [`Reimaging ${name}`, "Progress shows under Deployment."],
  release: (name) => [`Released ${name}`, "It is back in the pool."],
  maintenance: (name) => [`${name} is in maintenance`, ""],
  resume: (name) => [`${name} is back in service`, ""],
};

/** `applyMachine` draws the machine the API answered with. */
export function initActions(ctx, applyMachine) {
  const post = (action, body = {}) => api("POST", `/api/machines/${encodeURIComponent(ctx.id)}/actions/${action}`, body);

  /** The confirmation dialog of `action`, or the API call itself when it needs none. */
  const confirmAndRun = async (action, name) => {
    const t = ctx.transitions[action] || {};
    const requireText = ctx.typeToConfirm.has(action) ? name : "";
    if (action === "deploy" || action === "reimage") return deployDialog(ctx, action, requireText, post);
    if (action === "release") {
      return modal({
        title: `Release ${name}`, iconName: APP.actions[action], danger: true, confirmLabel: "Release", requireText,
        body: [h("p", {}, t.help || "Returns the machine to the pool.")],
        onConfirm: () => post(action),
      });
    }
    if (action === "maintenance") {
      const reason = h("input", { id: "action-reason", name: "reason", maxlength: "500", placeholder: "e.g. replacing a DIMM", autocomplete: "off" });
      return modal({
        title: `Maintenance for ${name}`, iconName: APP.actions[action], confirmLabel: "Take out of service",
        body: [h("p", {}, t.help || ""), h("div", { class: "field" }, h("label", { for: "action-reason" }, "Reason (optional)"), reason)],
        onConfirm: (form) => post(action, { reason: form.elements.reason.value.trim() }),
      });
    }
    return post(action);
  };

  const runAction = async (action) => {
    const name = ctx.machine.name;
    let result = null;
    try {
      result = await confirmAndRun(action, name);
    } catch (err) {
      showError(err, `Cannot ${action}`);
      return;
    }
    if (!result) return;
    // A reimage answers with what it did through the BMC (one-time PXE and a power cycle).
    const bmc = result.bmc_boot || null;
    applyMachine(result);
    toast(...(SAID[action]?.(name) || [`${name}: ${action}`, ""]));
    if (bmc?.attempted) {
      toast(bmc.ok ? `${name}: network boot through its BMC` : `${name}: its BMC could not start the network boot`,
        bmc.ok ? `Done: ${bmc.ops.map(opLabel).join(", then ")}.` : bmc.error, bmc.ok ? "ok" : "error", "power");
    } else if (bmc) {
      toast(`${name}: boot it from the network`, bmc.error, "ok", "info");
    }
  };

  $("#actions").addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (button && !refused(button)) runAction(button.dataset.action);
  });
}
