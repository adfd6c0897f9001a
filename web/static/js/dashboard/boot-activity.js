// The dashboard's boot doctor parts: the Boot activity card (the newest MACs, each with its
// last step and diagnosis) and the boot edge's banners.

import { api } from "../api.js";
import { bootDeadlines, bootFacts, lastStep, stepTone } from "../boot.js";
import { when } from "../components.js";
import { PAGE } from "../data.js";
import { $, byData, capitalize, h, icon, setText } from "../dom.js";
import { live } from "../live.js";
import { showError } from "../toast.js";

/** The boot edge's banners: DHCP/TFTP failed to start (with the reason), discovery lacking
 * files. The server says when the edge changes ("boot_edge" events); the details are asked. */
export function initBootEdge() {
  const banner = $("#boot-edge-banner");
  const missingBox = $("#discovery-missing");
  if (!banner) return;
  const render = (status) => {
    const failed = status?.state === "failed";
    banner.hidden = !failed;
    setText(byData(banner, "field", "boot-edge-reason"), failed ? status.reason || "" : "");
    const disc = status?.discovery || {};
    const missing = [...(disc.missing || []), ...(disc.loaders_missing || [])];
    if (missingBox) {
      missingBox.hidden = failed || !missing.length;
      setText(byData(missingBox, "field", "discovery-missing"), missing.join(", "));
    }
  };
  const reload = async () => {
    try { render(await api("GET", "/api/boot/status")); } catch { /* keep what we show */ }
  };
  live.on("boot_edge", reload);
  live.on("resync", reload);
}

/** Boot activity: the newest MACs the boot doctor saw, each with its last step and diagnosis. */
export function initBootCard() {
  const list = $("#boot-list");
  if (!list) return;
  const limit = PAGE.boot_rows || 8;
  let rows = (PAGE.boot || []).map((r) => ({ mac: r.mac, steps: r.steps, diagnosis: r.diagnosis }));
  // MAC -> {id, name} of its machine, or null: a MAC that boots but never registered.
  const owners = new Map((PAGE.boot || []).map((r) => [r.mac, r.machine]));
  const looking = new Set();
  const fresh = new Set();

  const owner = async (row) => {
    if (owners.has(row.mac) || looking.has(row.mac)) return;
    looking.add(row.mac);
    const id = row.steps.map((st) => st.detail?.machine_id).find(Boolean);
    try {
      if (id) {
        const m = await api("GET", `/api/machines/${encodeURIComponent(id)}`);
        owners.set(row.mac, { id: m.id, name: m.name });
      } else {
        const found = await api("GET", `/api/machines?q=${encodeURIComponent(row.mac)}&limit=2`);
        owners.set(row.mac, found.items.length === 1 ? { id: found.items[0].id, name: found.items[0].name } : null);
      }
    } catch {
      owners.set(row.mac, null);
    } finally {
      looking.delete(row.mac);
    }
    draw();
  };

  const rowEl = (row) => {
    const last = lastStep(row);
    const who = owners.get(row.mac);
    const facts = bootFacts(last);
    return h("li", { class: `boot-row${row.diagnosis ? " is-stopped" : ""}${fresh.has(row.mac) ? " new" : ""}`, "data-mac": row.mac },
      h("span", { class: `bdot tone-${stepTone(last, true, row.diagnosis)}`, "aria-hidden": "true" }),
      h("div", { class: "boot-main" },
        h("div", { class: "boot-who" },
          who ? h("a", { class: "boot-name", href: `/machines/${encodeURIComponent(who.id)}` }, who.name)
            : who === null ? h("span", { class: "boot-unknown", title: "This MAC boots but no machine with it has registered" }, "unknown machine") : null,
          h("span", { class: "boot-mac mono" }, row.mac)),
        h("div", { class: "boot-last" }, h("span", { class: "boot-step" }, last.label),
          last.count > 1 ? ` ×${last.count}` : "", facts.length ? [" · ", ...facts] : null)),
      h("span", { class: "boot-when" }, when(last.last_at || last.at)),
      row.diagnosis ? h("p", { class: "boot-diag" }, icon("alert"), h("span", {}, capitalize(row.diagnosis))) : null);
  };

  const draw = () => {
    // Newest first by the time of each MAC's last step (events arrive in batches, unordered).
    rows.sort((a, b) => (lastStep(b).last_at || 0) - (lastStep(a).last_at || 0));
    list.replaceChildren(...rows.slice(0, limit).map(rowEl));
    fresh.clear();
    $(".boot-empty").hidden = rows.length > 0;
    const stopped = rows.slice(0, limit).filter((r) => r.diagnosis).length;
    const pill = $('[data-field="boot-stopped"]');
    pill.hidden = stopped === 0;
    setText(pill, `${stopped} stopped`);
    for (const row of rows.slice(0, limit)) if (!owners.has(row.mac)) owner(row);
  };

  const reload = async () => {
    try {
      const latest = await api("GET", `/api/boot?limit=${limit}`);
      rows = latest.map((r) => ({ mac: r.mac, steps: r.steps, diagnosis: r.diagnosis }));
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load boot activity"); // offline: the resync after reconnecting reloads
      return;
    }
    draw();
    deadlines(rows);
  };
  const deadlines = bootDeadlines(reload);

  live.on("boot", ({ op, id, data }) => {
    rows = rows.filter((r) => r.mac !== id);
    if (op !== "delete" && data?.steps?.length) {
      rows.push({ mac: data.mac, steps: data.steps.slice(-1), diagnosis: data.diagnosis });
      fresh.add(data.mac);
    }
    draw();
    rows = rows.slice(0, limit);
    deadlines(rows);
  });
  // A machine that registers turns its MAC's "unknown machine" into its name.
  live.on("machine", ({ op, data }) => {
    if (op !== "put" || !data) return;
    const had = owners.get(data.mac);
    owners.set(data.mac, { id: data.id, name: data.name });
    if (rows.some((r) => r.mac === data.mac) && (!had || had.name !== data.name)) draw();
  });
  live.on("resync", reload);
  draw();
  deadlines(rows);
}
