// Formatting: the same wording as the Jinja filters (dragonfly/format.py).

import { $$, setText, throttle } from "./dom.js";

export const fmt = {
  bytes(value) { // decimal, like disks and downloads
    if (value == null) return "—";
    let size = Number(value);
    for (const unit of ["B", "KB", "MB", "GB", "TB", "PB"]) {
      if (Math.abs(size) < 1000 || unit === "PB") return unit === "B" ? `${size.toFixed(0)} B` : `${size.toFixed(1)} ${unit}`;
      size /= 1000;
    }
    return "—";
  },
  ibytes(value) { // binary, like memory
    if (!value) return "—";
    let size = Number(value);
    for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
      if (Math.abs(size) < 1024 || unit === "TiB") return Number.isInteger(size) ? `${size} ${unit}` : `${size.toFixed(1)} ${unit}`;
      size /= 1024;
    }
    return "—";
  },
  eta(seconds) {
    if (seconds == null) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  },
  /** A rough duration for an estimate: "a few seconds", "about 35 s", "about 4 min". */
  about(seconds) {
    if (seconds == null) return "—";
    const s = Math.max(0, seconds);
    if (s < 10) return "a few seconds";
    if (s < 60) return `about ${Math.round(s / 5) * 5} s`;
    if (s < 3570) return `about ${Math.round(s / 60)} min`;
    const m = Math.round(s / 300) * 5;
    return `about ${Math.floor(m / 60)} h${m % 60 ? ` ${String(m % 60).padStart(2, "0")} min` : ""}`;
  },
  /** A short duration for a chart's labels: "48 s", "7.5 min", "1.2 h". */
  short(seconds) {
    if (seconds == null) return "—";
    const s = Math.max(0, seconds);
    const one = (v) => (v >= 10 ? String(Math.round(v)) : String(Math.round(v * 10) / 10));
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${one(s / 60)} min`;
    return `${one(s / 3600)} h`;
  },
  ago(ts) {
    if (!ts) return "never";
    const d = Math.max(0, Date.now() / 1000 - ts);
    if (d < 45) return d < 5 ? "just now" : `${Math.floor(d)} s ago`;
    if (d < 3600) return `${Math.round(d / 60)} min ago`;
    if (d < 86400) return `${Math.round(d / 3600)} h ago`;
    return `${Math.round(d / 86400)} d ago`;
  },
  iso: (ts) => (ts ? new Date(ts * 1000).toISOString().replace(/\.\d+Z$/, "Z") : ""),
  pct: (v) => `${Math.round(v)}%`,
};

/** Relative times are refreshed when the stream delivers something, not on a timer. */
export const refreshTimes = throttle(() => {
  for (const t of $$("time[data-ts]")) setText(t, fmt.ago(Number(t.dataset.ts)));
}, 5000);
