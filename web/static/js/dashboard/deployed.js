// The dashboard's deployment timer parts: the Deployed card (how many deployed, the average
// time, the last 24 h, and the last 100 deployments as a bar of ticks) and the charts below
// (dashboard/charts.js). Figures come from GET /api/deployments/stats in the browser's time
// zone, again when a deployment finishes (at most every 10 s).

import { api } from "../api.js";
import { templateName } from "../data.js";
import { $, byData, h, setText, throttle } from "../dom.js";
import { fmt } from "../fmt.js";
import { live } from "../live.js";
import { drawCharts } from "./charts.js";

const REFRESH_MS = 10_000;
const SETTLE_MS = 1500; // the history records a deployment just after its workflow finishes

const when = (ts) => new Date(ts * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

/** One tick's words: the tooltip and the readout under the bar. */
export function tickText(d) {
  const what = `${d.machine || d.machine_id} · ${templateName(d.template)} · ${fmt.eta(d.seconds)} · ${when(d.finished_at)}`;
  return d.result === "succeeded" ? `${what} · deployed` : `${what} · failed: ${d.reason || "no reason given"}`;
}

function drawTicks(bar, readout, recent) {
  const longest = Math.max(1, ...recent.map((d) => d.seconds || 0));
  const failed = recent.filter((d) => d.result !== "succeeded").length;
  bar.setAttribute("aria-label", recent.length
    ? `The last ${recent.length} deployments, oldest first: ${recent.length - failed} succeeded, ${failed} failed`
    : "No deployments yet");
  bar.replaceChildren(...recent.map((d) => h("a", {
    class: `tick ${d.result === "succeeded" ? "is-ok" : "is-failed"}`,
    href: `/machines/${encodeURIComponent(d.machine_id)}`,
    title: tickText(d),
    tabindex: "-1", // a hundred tab stops would bury the page: the machines are linked elsewhere
    "data-id": d.id, "data-result": d.result, "data-seconds": String(d.seconds),
    style: `height: ${Math.max(8, Math.round((100 * (d.seconds || 0)) / longest))}%`,
  })));
  readout.dataset.idle = "";
  setText(readout, recent.length ? "Hover a tick for its deployment; click it for the machine" : "No deployment has finished yet");
}

function initTickReadout(bar, readout) {
  const show = (e) => {
    const tick = e.target.closest(".tick");
    if (!tick) return;
    delete readout.dataset.idle;
    setText(readout, tick.title);
    readout.classList.toggle("is-failed", tick.dataset.result !== "succeeded");
  };
  bar.addEventListener("pointerover", show);
  bar.addEventListener("focusin", show);
}

function drawCard(card, stats) {
  const set = (field, text) => setText(byData(card, "field", field), text);
  set("deployed", String(stats.deployed));
  set("deployed-of", `of ${stats.total} · ${stats.failed} failed`);
  set("average", stats.average_seconds == null ? "—" : fmt.eta(stats.average_seconds));
  set("average-note", stats.deployed ? "per successful deployment" : "nothing deployed yet");
  const day = stats.last_24h;
  set("day", String(day.deployed));
  set("day-note", `${day.failed} failed${day.average_seconds == null ? "" : ` · avg ${fmt.eta(day.average_seconds)}`}`);
  card.dataset.loaded = "";
}

export function initDeployed() {
  const card = $("#deployed-card");
  if (!card) return;
  const bar = $("#deploy-ticks");
  const readout = $('[data-field="tick-readout"]');
  initTickReadout(bar, readout);
  let last = null;

  const load = async () => {
    try {
      const offset = -new Date().getTimezoneOffset();
      last = await api("GET", `/api/deployments/stats?tz_offset=${offset}`);
    } catch (err) {
      // Offline: the resync after reconnecting loads again. No history here: keep the card quiet.
      if (err.status && err.status !== 0) card.dataset.error = err.message || String(err.status);
      return;
    }
    drawCard(card, last);
    drawTicks(bar, readout, last.recent || []);
    drawCharts(last);
  };
  const refresh = throttle(load, REFRESH_MS);

  live.on("workflow", ({ data }) => {
    if (data && (data.state === "succeeded" || data.state === "failed")) setTimeout(refresh, SETTLE_MS);
  });
  live.on("resync", refresh);
  // The charts are drawn for their width: draw them again when it changes (a phone turned).
  let width = 0;
  const grid = $("#deploy-charts");
  if (grid && "ResizeObserver" in window) {
    let timer = 0;
    new ResizeObserver(([entry]) => {
      const w = Math.round(entry.contentRect.width);
      if (w === width) return;
      width = w;
      clearTimeout(timer);
      timer = setTimeout(() => { if (last) drawCharts(last); }, 120);
    }).observe(grid);
  }
  load();
}
