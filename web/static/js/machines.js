// The machine list: search, filters and sorting that re-query the API, paging, live rows,
// and (machines/) the row builders, the selection with its bulk tagging, power (the Power
// column, the power filter and bulk power actions) and, for admins, Adopt from BMC.

import { api } from "./api.js";
import { APP, PAGE, PAGE_SIZE } from "./data.js";
import { $, $$, byData, debounce, h, icon, setText, throttle } from "./dom.js";
import { setLockMark } from "./guards.js";
import { live } from "./live.js";
import { initAdopt } from "./machines/adopt.js";
import { initListPower } from "./machines/power.js";
import { machineRows } from "./machines/rows.js";
import { initSelection } from "./machines/selection.js";
import { showError, toast } from "./toast.js";

const DESC_FIRST = new Set(["memory", "cpus", "last_seen"]); // biggest / newest first

/** Search as you type, the tag and power filters, the state chips and the sortable headers. */
function initFilters(query, reload) {
  const search = $("#q");
  search.addEventListener("input", debounce(() => { query.q = search.value.trim(); reload(); }, 200));
  $("#machine-filters").addEventListener("submit", (e) => { e.preventDefault(); query.q = search.value.trim(); reload(); });
  $("#tag-filter").addEventListener("change", (e) => { query.tag = e.target.value; reload(); });
  $("#power-filter")?.addEventListener("change", (e) => { query.power = e.target.value; reload(); });
  $("#state-chips").addEventListener("click", (e) => {
    const chip = e.target.closest(".chip-btn");
    if (!chip) return;
    query.state = chip.dataset.state;
    for (const c of $$(".chip-btn", e.currentTarget)) c.setAttribute("aria-pressed", String(c === chip));
    reload();
  });
  $("#machine-table thead").addEventListener("click", (e) => {
    const button = e.target.closest(".th-sort");
    if (!button) return;
    const key = button.dataset.sort;
    if (query.sort === key) query.order = query.order === "asc" ? "desc" : "asc";
    else { query.sort = key; query.order = DESC_FIRST.has(key) ? "desc" : "asc"; }
    for (const th of $$("#machine-table thead th")) {
      const b = th.querySelector(".th-sort");
      if (!b) continue;
      const active = b.dataset.sort === query.sort;
      if (active) th.setAttribute("aria-sort", query.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      b.querySelector(".sort-icon").replaceWith(icon(active ? (query.order === "asc" ? "arrow-up" : "arrow-down") : "sort", "sort-icon"));
    }
    reload();
  });

  // "/" jumps to the search box, as in most dashboards.
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && !e.target.closest("input, textarea, select, [contenteditable]") && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      search.focus();
    }
  });
}

export function initMachines() {
  const tbody = $("#machine-rows");
  const query = { q: "", state: "", tag: "", power: "", sort: "name", order: "asc", ...(PAGE.query || {}) };
  const selected = new Set();
  // Locks are their own documents: API rows carry them, live machine events do not.
  const locks = new Map(Object.entries(PAGE.locks || {}));
  // Power too (id -> power status), from GET /api/power and the stream; null without power control.
  const powers = PAGE.power_enabled ? new Map(Object.entries(PAGE.power || {})) : null;
  const { rowEl, updateRow } = machineRows(locks, selected, powers);
  const names = new Map([...tbody.rows].map((tr) => [tr.dataset.id, tr.querySelector(".machine-link")?.textContent || tr.dataset.id]));
  let total = PAGE.total || 0;
  let seq = 0; // only the newest request's answer is drawn

  const rows = () => [...tbody.rows];

  const params = () => {
    const p = new URLSearchParams();
    if (query.q) p.set("q", query.q);
    if (query.state) p.set("state", query.state);
    if (query.tag) p.set("tag", query.tag);
    if (query.power) p.set("power", query.power);
    if (query.sort !== "name") p.set("sort", query.sort);
    if (query.order !== "asc") p.set("order", query.order);
    return p;
  };

  const syncURL = () => {
    const qs = params().toString();
    history.replaceState(null, "", `/machines${qs ? `?${qs}` : ""}`);
  };

  // The tag filter's options (and counts) follow tag edits.
  const refreshTags = throttle(async () => {
    let tags;
    try { tags = await api("GET", "/api/tags"); } catch { return; }
    const select = $("#tag-filter");
    const options = [h("option", { value: "" }, "All tags"), ...tags.map((t) => h("option", { value: t.name }, `${t.name} (${t.count})`))];
    if (query.tag && !tags.some((t) => t.name === query.tag)) options.push(h("option", { value: query.tag }, `${query.tag} (0)`));
    select.replaceChildren(...options);
    select.value = query.tag;
  }, 3000);

  const selection = initSelection(tbody, selected, { updateRow, tagsChanged: refreshTags });
  const filtering = () => Boolean(query.q || query.state || query.tag || query.power);

  const renderMeta = (states) => {
    if (states) {
      let all = 0;
      for (const s of APP.states || []) {
        const n = states[s] || 0;
        all += n;
        setText(byData($("#state-chips"), "count", s), String(n));
      }
      setText($('#state-chips [data-count=""]'), String(all));
    }
    setText($('[data-field="total"]'), String(total));
    setText($('[data-field="total-label"]'), (total === 1 ? "machine" : "machines") + (filtering() ? " match" : ""));
    const shown = tbody.rows.length;
    setText($('[data-field="showing"]'), `Showing ${shown.toLocaleString()} of ${total.toLocaleString()}`);
    $("#load-more").hidden = shown >= total;
    const filtered = filtering();
    $('.table-empty[data-kind="nomatch"]').hidden = shown > 0 || !filtered;
    $('.table-empty[data-kind="none"]').hidden = shown > 0 || filtered;
    selection.sync();
  };

  /** Fetch rows for the current query; `append` adds the next page after the loaded ones. */
  const load = async ({ append = false, limit = PAGE_SIZE } = {}) => {
    const mine = ++seq;
    const p = params();
    p.delete("power"); // the page's own filter (machines/power.js), not the API's
    p.set("limit", String(limit));
    if (append) p.set("offset", String(tbody.rows.length));
    document.body.classList.add("loading");
    let data;
    try {
      data = query.power && listPower ? await listPower.filtered(p, append ? tbody.rows.length : 0, limit)
        : await api("GET", `/api/machines?${p}`);
    } catch (err) {
      if (mine === seq) showError(err, "Cannot load machines");
      return;
    } finally {
      if (mine === seq) document.body.classList.remove("loading");
    }
    if (mine !== seq) return;
    total = data.total;
    for (const m of data.items) names.set(m.id, m.name);
    if (append) {
      const have = new Set(rows().map((r) => r.dataset.id));
      tbody.append(...data.items.filter((m) => !have.has(m.id)).map(rowEl));
    } else {
      // Keyed update: reuse rows by id and move only what moved, so focus and selection survive.
      const byId = new Map(rows().map((r) => [r.dataset.id, r]));
      const wanted = data.items.map((m) => {
        const tr = byId.get(m.id);
        if (tr) { updateRow(tr, m); byId.delete(m.id); return tr; }
        return rowEl(m);
      });
      wanted.forEach((tr, i) => { if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null); });
      for (const tr of byId.values()) tr.remove();
    }
    renderMeta(data.states);
  };

  // Power: the column and its filter follow every machine's power status; the bulk bar acts.
  const requery = throttle(() => load({ limit: Math.max(PAGE_SIZE, tbody.rows.length) }), 1500);
  const listPower = powers && initListPower(tbody, powers, { query, requery, selected, nameOf: (id) => names.get(id) || id });
  listPower?.loadAll().then((loaded) => { if (loaded && query.power) requery(); });
  initAdopt({ nameOf: (id) => names.get(id) || "" }); // admins: Adopt from BMC and the adoptions

  initFilters(query, () => { syncURL(); selection.resetRange(); load(); });
  $("#load-more").addEventListener("click", () => load({ append: true }));

  // Live rows: update visible rows at once. Re-query (throttled) only when the event can change
  // which rows match or the counts: a machine never seen before, or one whose state or tags
  // changed. Heartbeats of machines off screen cost nothing, even in a 10,000-machine fleet.
  const known = new Map(); // id -> "state|tags" as last seen
  const key = (m) => `${m.state}|${m.tags.join(",")}`;
  live.on("machine", ({ op, id, data }) => {
    const tr = byData(tbody, "id", id);
    if (op === "delete" || !data) {
      known.delete(id);
      if (tr) { tr.remove(); selected.delete(id); }
      requery();
      return;
    }
    const before = known.get(id) ?? (tr ? `${tr.dataset.state}|${[...tr.querySelectorAll(".row-tags .chip")].map((c) => c.textContent).join(",")}` : undefined);
    known.set(id, key(data));
    if (tr) updateRow(tr, data);
    const changed = before !== key(data);
    if (changed || (!tr && query.sort === "last_seen")) requery();
    if (changed && before?.split("|")[1] !== data.tags.join(",")) refreshTags();
  });
  live.on("lock", ({ op, id, data }) => {
    if (op === "delete" || !data) locks.delete(id); else locks.set(id, data);
    setLockMark(byData(tbody, "id", id)?.querySelector(".machine-link"), locks.get(id));
  });
  live.on("resync", () => load({ limit: Math.max(PAGE_SIZE, tbody.rows.length) }));
  renderMeta(null);
  // Arriving from a machine page that deleted its machine.
  const deleted = new URLSearchParams(location.search).get("deleted");
  if (deleted) {
    toast(`Deleted ${deleted}`, "It is no longer in the inventory.");
    syncURL();
  }
}
