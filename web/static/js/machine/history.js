// The machine page's History card, newest first, kept live from "history" events.

import { when } from "../components.js";
import { $, byData, h } from "../dom.js";
import { live } from "../live.js";

export const historyItem = (e) => h("li", { class: `hist hist-${e.kind}`, "data-id": e.id },
  h("span", { class: "hist-dot", "aria-hidden": "true" }),
  h("div", {}, h("p", { class: "hist-msg" }, e.message),
    h("p", { class: "hist-meta" }, h("span", { class: "hist-kind" }, e.kind), " · ", when(e.at))));

/** `onAgentEvent` is told when the entry is about the agent (a command queued, collected...). */
export function initHistory(ctx, onAgentEvent) {
  live.on("history", ({ op, data }) => {
    if (op !== "put" || !data || data.machine_id !== ctx.id) return;
    if (data.kind === "agent") onAgentEvent(); // a command queued, collected or withdrawn
    const list = $("#history");
    if (byData(list, "id", data.id)) return;
    const item = historyItem(data);
    item.classList.add("new");
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
  });
}
