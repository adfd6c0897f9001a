// The tags page: every tag with its machine count, renamed or deleted across the fleet.

import { api } from "./api.js";
import { CAN } from "./data.js";
import { modal } from "./dialogs.js";
import { $, byData, h, icon, setText, throttle } from "./dom.js";
import { live } from "./live.js";
import { showError, toast } from "./toast.js";

export function initTags() {
  const tbody = $("#tag-rows");
  const tagRow = (t, top) => h("tr", { "data-tag": t.name },
    h("td", {}, h("a", { class: "chip tag", href: `/machines?tag=${encodeURIComponent(t.name)}` }, t.name)),
    h("td", { class: "num" }, h("a", { href: `/machines?tag=${encodeURIComponent(t.name)}`, "aria-label": `${t.count} machines tagged ${t.name}` }, t.count)),
    h("td", { class: "col-share" }, h("span", { class: "share", "aria-hidden": "true" }, h("span", { style: `width: ${(100 * t.count / top).toFixed(1)}%` }))),
    h("td", { class: "col-actions" }, CAN.write ? [
      h("button", { type: "button", class: "btn btn-sm btn-ghost", "data-rename": t.name, "aria-label": `Rename tag ${t.name}` },
        icon("edit"), h("span", { class: "btn-label" }, "Rename")),
      h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-delete": t.name, "aria-label": `Delete tag ${t.name}` },
        icon("trash"), h("span", { class: "btn-label" }, "Delete"))] : null));

  const reload = async () => {
    let tags;
    try { tags = await api("GET", "/api/tags"); } catch (err) { showError(err, "Cannot load tags"); return; }
    const top = Math.max(1, ...tags.map((t) => t.count));
    tbody.replaceChildren(...tags.map((t) => tagRow(t, top)));
    $("#tags-table").hidden = tags.length === 0;
    $(".tags-empty").hidden = tags.length > 0;
    setText($('[data-field="tag-count"]'), String(tags.length));
  };

  tbody.addEventListener("click", async (e) => {
    const rename = e.target.closest("[data-rename]");
    const remove = e.target.closest("[data-delete]");
    if (rename) {
      const old = rename.dataset.rename;
      const input = h("input", { id: "rename-tag", name: "name", value: old, autocomplete: "off", spellcheck: "false" });
      const done = await modal({
        title: `Rename “${old}”`, iconName: "edit", confirmLabel: "Rename", inlineErrors: true,
        body: [h("p", { class: "muted" }, "Renames the tag on every machine that carries it."),
          h("div", { class: "field" }, h("label", { for: "rename-tag" }, "New name"), input)],
        onConfirm: (form) => api("PUT", `/api/tags/${encodeURIComponent(old)}`, { name: form.elements.name.value }),
      });
      if (done) { toast(`Renamed on ${done.updated} machine${done.updated === 1 ? "" : "s"}`); reload(); }
    } else if (remove) {
      const tag = remove.dataset.delete;
      const count = byData(tbody, "tag", tag)?.cells[1].textContent.trim() || "its";
      const done = await modal({
        title: `Delete “${tag}”`, iconName: "trash", confirmLabel: "Delete tag", danger: true,
        body: [h("p", {}, `Removes the tag from ${count} machine${count === "1" ? "" : "s"}. The machines themselves are not changed otherwise.`)],
        onConfirm: () => api("DELETE", `/api/tags/${encodeURIComponent(tag)}`),
      });
      if (done) { toast(`Deleted “${tag}” from ${done.updated} machine${done.updated === 1 ? "" : "s"}`); reload(); }
    }
  });

  // Only tag changes matter here; heartbeats and progress are ignored.
  const known = new Map();
  const reloadSoon = throttle(reload, 1500);
  live.on("machine", ({ op, id, data }) => {
    const tags = op === "delete" || !data ? null : data.tags.join("\n");
    if (known.get(id) !== tags) reloadSoon();
    known.set(id, tags);
  });
  live.on("resync", reload);
}
