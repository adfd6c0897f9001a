// The machine list's table rows: built from API rows or live events, updated in place.

import { badge, when } from "../components.js";
import { h } from "../dom.js";
import { fmt } from "../fmt.js";
import { lockMark } from "../guards.js";
import { powerCell } from "../power.js";

/**
 * Row builders over the page's lock map (id -> lock), selection (a Set of ids) and power map
 * (id -> power status; `null` for an instance without power control: no Power column).
 */
export function machineRows(locks, selected, powers) {
  const rowEl = (m) => {
    if (m.lock !== undefined) { if (m.lock) locks.set(m.id, m.lock); else locks.delete(m.id); }
    const lock = locks.get(m.id);
    const tr = h("tr", { "data-id": m.id, "data-state": m.state },
      h("td", { class: "col-check" }, h("input", { type: "checkbox", class: "row-check", "aria-label": `Select ${m.name}`, value: m.id })),
      h("td", { class: "col-name" },
        h("a", { class: "machine-link", href: `/machines/${encodeURIComponent(m.id)}` }, m.name),
        lock ? lockMark(lock) : null,
        h("div", { class: "row-tags" }, m.tags.map((t) => h("span", { class: "chip tag sm" }, t)))),
      h("td", { class: "col-state" }, badge(m.state)),
      powers ? h("td", { class: "col-power" }, powerCell(powers.get(m.id))) : null,
      h("td", { class: "col-ip mono" }, m.ip || "—"),
      h("td", { class: "col-mac mono" }, m.mac),
      h("td", { class: "col-vendor" }, h("span", { class: "vendor" }, m.vendor || "—"), " ", h("span", { class: "muted" }, m.product)),
      h("td", { class: "col-memory num" }, fmt.ibytes(m.memory_bytes)),
      h("td", { class: "col-cpus num" }, m.cpu_threads || "—"),
      h("td", { class: "col-seen" }, when(m.last_seen)));
    tr.querySelector(".row-check").checked = selected.has(m.id);
    tr.classList.toggle("selected", selected.has(m.id));
    return tr;
  };

  /** Update a row in place (keeps its checkbox, and so keyboard focus). */
  const updateRow = (tr, m) => {
    const fresh = rowEl(m);
    const changedState = tr.dataset.state !== m.state;
    tr.dataset.state = m.state;
    const nextCells = [...fresh.cells]; // copied: replaceWith moves cells out of `fresh`
    [...tr.cells].slice(1).forEach((cell, i) => {
      const next = nextCells[i + 1];
      if (cell.innerHTML !== next.innerHTML) cell.replaceWith(next);
    });
    if (changedState) { tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash"); }
  };

  return { rowEl, updateRow };
}
