// The dashboard's deployment charts, drawn here as inline SVG (no library, nothing fetched):
// time by template and by hardware (median bars, the average as a mark, with counts), outcome
// by template (stacked), and deployments by day and by hour of day (stacked columns). Each is
// drawn for its container's width, so text stays readable at phone width; the colours are
// the theme's (CSS classes on the shapes, see app.css), in dark and light alike.

import { templateName } from "../data.js";
import { $, h, svg } from "../dom.js";
import { fmt } from "../fmt.js";

const CHAR = 6.7; // average width of a 12 px label character, for fitting labels
const ROW = 36; // height of a horizontal bar chart's row: its label line and its bar

const fitText = (text, width) => {
  const max = Math.max(4, Math.floor(width / CHAR));
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
};

/** A round axis maximum at or above `v`: 1, 2, 2.5, 5 × 10^n (for counts, whole numbers
 * whose half is one too where it can be: 2, 4, 6, 8 × 10^n). */
export function niceMax(v, counts = false) {
  if (!(v > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(v));
  const steps = counts ? [1, 2, 3, 4, 5, 6, 8, 10] : [1, 2, 2.5, 5, 10];
  for (const m of steps) if (m * pow >= v && (!counts || Number.isInteger(m * pow))) return m * pow;
  return 10 * pow;
}

const widthOf = (box) => Math.max(220, Math.floor(box.clientWidth || box.getBoundingClientRect().width || 320));

const frame = (width, height, label) => svg("svg", {
  class: "chart-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
});

const titled = (el, text) => {
  const title = svg("title");
  title.textContent = text;
  el.prepend(title);
  return el;
};

const text = (x, y, content, attrs = {}) => {
  const el = svg("text", { x, y, ...attrs });
  el.textContent = content;
  return el;
};

const empty = (box, words) => box.replaceChildren(h("p", { class: "chart-empty muted small" }, words));

/** Rows of horizontal bars: a label and its figures above each bar. */
function barRows(box, rows, { label, scale, bars, value, title }) {
  if (!rows.length) { empty(box, "No finished deployments yet"); return; }
  const width = widthOf(box);
  const chart = frame(width, rows.length * ROW, label);
  const max = niceMax(Math.max(...rows.map(scale)));
  rows.forEach((row, i) => {
    const g = titled(svg("g", { class: "chart-row", transform: `translate(0 ${i * ROW})`, "data-name": row.name,
      "data-succeeded": row.succeeded, "data-failed": row.failed }), title(row));
    const figures = value(row, width < 360);
    g.append(
      text(0, 13, fitText(row.label, width - figures.length * CHAR - 12), { class: "chart-label" }),
      text(width, 13, figures, { class: "chart-value", "text-anchor": "end" }),
      svg("rect", { class: "chart-track", x: 0, y: 19, width, height: 10, rx: 3 }));
    for (const bar of bars(row, (v) => (width * v) / max)) g.append(bar);
    chart.append(g);
  });
  box.replaceChildren(chart);
}

/** Time by a group: the median as the bar, the average as a mark across it. */
function timeChart(box, groups, label, name = (g) => g.name) {
  const rows = groups.map((g) => ({ ...g, label: name(g) }))
    .sort((a, b) => (b.median_seconds ?? -1) - (a.median_seconds ?? -1));
  barRows(box, rows, {
    label,
    scale: (r) => Math.max(r.median_seconds || 0, r.average_seconds || 0),
    bars: (r, x) => (r.median_seconds == null ? [] : [
      svg("rect", { class: "bar-median", x: 0, y: 19, width: Math.max(2, x(r.median_seconds)), height: 10, rx: 3,
        "data-seconds": r.median_seconds }),
      svg("rect", { class: "bar-average", x: Math.max(0, x(r.average_seconds) - 1), y: 16, width: 2, height: 16,
        "data-seconds": r.average_seconds })]),
    value: (r, narrow) => (r.median_seconds == null ? "none succeeded"
      : `${fmt.short(r.median_seconds)} · ${r.succeeded}${narrow ? "" : r.succeeded === 1 ? " run" : " runs"}`),
    title: (r) => (r.median_seconds == null ? `${r.label}: no successful deployment (${r.failed} failed)`
      : `${r.label}: median ${fmt.eta(r.median_seconds)}, average ${fmt.eta(r.average_seconds)}, `
        + `from ${r.succeeded} successful deployment${r.succeeded === 1 ? "" : "s"}${r.failed ? ` (${r.failed} failed)` : ""}`),
  });
}

/** Succeeded and failed deployments by template, stacked. */
function outcomeChart(box, groups) {
  const rows = groups.map((g) => ({ ...g, label: templateName(g.name) }))
    .sort((a, b) => b.succeeded + b.failed - (a.succeeded + a.failed));
  barRows(box, rows, {
    label: "Succeeded and failed deployments by template",
    scale: (r) => r.succeeded + r.failed,
    bars: (r, x) => [
      svg("rect", { class: "bar-ok", x: 0, y: 19, width: x(r.succeeded), height: 10, "data-count": r.succeeded }),
      svg("rect", { class: "bar-failed", x: x(r.succeeded), y: 19, width: x(r.failed), height: 10, "data-count": r.failed })],
    value: (r, narrow) => `${r.succeeded} ok · ${r.failed}${narrow ? " ✗" : " failed"}`,
    title: (r) => {
      const total = r.succeeded + r.failed;
      return `${r.label}: ${r.succeeded} succeeded, ${r.failed} failed (${total ? Math.round((100 * r.failed) / total) : 0}% failed)`;
    },
  });
}

/** Stacked columns (succeeded below, failed above) with a light count axis. */
function columns(box, cols, label) {
  const width = widthOf(box);
  const height = 150;
  const left = 26, top = 8, bottom = 20;
  const plot = height - top - bottom;
  const max = niceMax(Math.max(1, ...cols.map((c) => c.succeeded + c.failed)), true);
  const chart = frame(width, height, label);
  const y = (v) => top + plot - (plot * v) / max;
  for (const v of [0, max / 2, max]) {
    if (!Number.isInteger(v)) continue;
    chart.append(svg("line", { class: "chart-rule", x1: left, x2: width, y1: y(v), y2: y(v) }),
      text(left - 6, y(v) + 4, String(v), { class: "chart-axis", "text-anchor": "end" }));
  }
  const slot = (width - left) / cols.length;
  const bar = Math.max(1, Math.min(slot - 2, slot * 0.72));
  const every = Math.ceil(cols.length / Math.max(1, Math.floor((width - left) / 42)));
  cols.forEach((c, i) => {
    const x = left + i * slot + (slot - bar) / 2;
    const g = titled(svg("g", { class: "chart-col", "data-key": c.key, "data-succeeded": c.succeeded, "data-failed": c.failed }),
      `${c.title}: ${c.succeeded} succeeded, ${c.failed} failed`);
    g.append(svg("rect", { class: "chart-hit", x: left + i * slot, y: top, width: slot, height: plot }));
    if (c.succeeded) g.append(svg("rect", { class: "bar-ok", x, y: y(c.succeeded), width: bar, height: y(0) - y(c.succeeded) }));
    if (c.failed) g.append(svg("rect", { class: "bar-failed", x, y: y(c.succeeded + c.failed), width: bar, height: y(c.succeeded) - y(c.succeeded + c.failed) }));
    chart.append(g);
    if (i % every === 0) chart.append(text(left + i * slot + slot / 2, height - 5, c.tick, { class: "chart-axis", "text-anchor": "middle" }));
  });
  box.replaceChildren(chart);
}

const DAY_MS = 86_400_000;
const dayLabel = (iso, style) => new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, { ...style, timeZone: "UTC" });

/** The last 30 days in the browser's time zone, each with its deployments (none: zero). */
function lastDays(byDay) {
  const known = new Map(byDay.map((d) => [d.day, d]));
  const today = Date.now() - new Date().getTimezoneOffset() * 60_000;
  const days = [];
  for (let i = 29; i >= 0; i -= 1) {
    const iso = new Date(today - i * DAY_MS).toISOString().slice(0, 10);
    const d = known.get(iso) || { succeeded: 0, failed: 0 };
    days.push({ key: iso, succeeded: d.succeeded, failed: d.failed, tick: dayLabel(iso, { month: "short", day: "numeric" }),
      title: dayLabel(iso, { weekday: "short", month: "short", day: "numeric" }) });
  }
  return days;
}

export function drawCharts(stats) {
  const none = !stats.total;
  const draw = (id, fn) => {
    const box = $(`#${id}`);
    if (!box) return;
    if (none) empty(box, "No finished deployments yet"); else fn(box);
  };
  draw("chart-time-template", (box) => timeChart(box, stats.by_template, "Median time by template", (g) => templateName(g.name)));
  draw("chart-time-hardware", (box) => timeChart(box, stats.by_hardware, "Median time by hardware"));
  draw("chart-outcome-template", (box) => outcomeChart(box, stats.by_template));
  draw("chart-by-day", (box) => columns(box, lastDays(stats.by_day), "Deployments by day, the last 30 days"));
  draw("chart-by-hour", (box) => columns(box, stats.by_hour.map((d) => ({
    key: String(d.hour), succeeded: d.succeeded, failed: d.failed, tick: String(d.hour),
    title: `${String(d.hour).padStart(2, "0")}:00–${String(d.hour).padStart(2, "0")}:59` })), "Deployments by hour of day"));
}
