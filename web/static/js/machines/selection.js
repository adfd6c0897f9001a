// The machine list's selection (checkboxes, shift-click ranges, select all visible) and the
// bulk bar that tags the selected machines.

import { api } from "../api.js";
import { $, byData, setText } from "../dom.js";
import { showError, toast } from "../toast.js";

/**
 * Wire the selection of `tbody`'s rows into `selected` (a Set of ids). `updateRow` redraws a
 * row from an API answer; `tagsChanged` is told after a bulk tag edit. Returns {sync, resetRange}:
 * sync() redraws checkboxes and the bulk bar, resetRange() forgets the shift-click anchor.
 */
export function initSelection(tbody, selected, { updateRow, tagsChanged }) {
  const rows = () => [...tbody.rows];
  let lastChecked = null; // index of the last row clicked, for shift-click ranges
  const selectAll = $("#select-all");
  const bulkbar = $("#bulkbar");

  const sync = () => {
    const visible = rows();
    let on = 0;
    for (const tr of visible) {
      const checked = selected.has(tr.dataset.id);
      tr.querySelector(".row-check").checked = checked;
      tr.classList.toggle("selected", checked);
      if (checked) on += 1;
    }
    selectAll.checked = visible.length > 0 && on === visible.length;
    selectAll.indeterminate = on > 0 && on < visible.length;
    if (bulkbar) {
      bulkbar.hidden = selected.size === 0;
      setText(byData(bulkbar, "field", "selected"), String(selected.size));
    }
  };
  tbody.addEventListener("click", (e) => {
    const box = e.target.closest(".row-check");
    if (!box) return;
    const all = rows();
    const index = all.indexOf(box.closest("tr"));
    const range = e.shiftKey && lastChecked != null && lastChecked < all.length
      ? all.slice(Math.min(lastChecked, index), Math.max(lastChecked, index) + 1) : [all[index]];
    for (const tr of range) {
      if (box.checked) selected.add(tr.dataset.id); else selected.delete(tr.dataset.id);
    }
    lastChecked = index;
    sync();
  });
  selectAll.addEventListener("change", () => {
    for (const tr of rows()) {
      if (selectAll.checked) selected.add(tr.dataset.id); else selected.delete(tr.dataset.id);
    }
    sync();
  });

  // Bulk tagging.
  const bulkTag = $("#bulk-tag");
  bulkbar?.addEventListener("click", async (e) => {
    const button = e.target.closest("[data-bulk]");
    if (!button) return;
    const op = button.dataset.bulk;
    if (op === "clear") { selected.clear(); sync(); return; }
    const tag = bulkTag.value.trim();
    if (!tag) { bulkTag.setAttribute("aria-invalid", "true"); bulkTag.focus(); toast("Type a tag first", "", "error"); return; }
    bulkTag.removeAttribute("aria-invalid");
    const ids = [...selected];
    button.disabled = true;
    try {
      const result = await api("POST", "/api/machines/bulk/tags", op === "add" ? { ids, add: [tag] } : { ids, remove: [tag] });
      for (const m of result.items) { const tr = byData(tbody, "id", m.id); if (tr) updateRow(tr, m); }
      toast(op === "add" ? `Tagged ${result.updated} machine${result.updated === 1 ? "" : "s"} “${tag}”`
        : `Removed “${tag}” from ${result.updated} machine${result.updated === 1 ? "" : "s"}`);
      bulkTag.value = "";
      tagsChanged();
    } catch (err) {
      bulkTag.setAttribute("aria-invalid", "true");
      showError(err, "Bulk tagging failed");
    } finally {
      button.disabled = false;
    }
  });
  bulkTag?.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); bulkbar.querySelector('[data-bulk="add"]').click(); }
  });

  return { sync, resetRange: () => { lastChecked = null; } };
}
