// Toasts: short notices in the corner, and API errors shown as one.

import { $, h, icon } from "./dom.js";

export function toast(title, text = "", kind = "ok", iconName = "") {
  const box = $("#toasts");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    icon(iconName || (kind === "error" ? "alert-circle" : "check-circle")),
    h("div", { class: "toast-body" }, h("p", { class: "toast-title" }, title), text ? h("p", { class: "toast-text" }, text) : null),
    h("button", { type: "button", class: "icon-btn", "aria-label": "Dismiss", onclick: () => dismiss() }, icon("x")));
  const dismiss = () => { item.classList.add("leaving"); setTimeout(() => item.remove(), 220); };
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(dismiss, kind === "error" ? 9000 : 4500);
}

/** The API's error detail ({field: problem} or text) as one line. */
export const detailText = (detail) => {
  if (detail == null || detail === "") return "";
  if (typeof detail !== "object") return String(detail);
  return Object.entries(detail).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
};

/** An API error as a toast, unless api() already showed it (423) or is leaving the page (401). */
export const showError = (err, what = "") => {
  if (!err.shown) toast(what ? `${what}: ${err.message}` : err.message, detailText(err.detail), "error");
};
