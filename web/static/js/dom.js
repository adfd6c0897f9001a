// DOM helpers shared by every module: query, build, icons, small timing utilities.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Build an element: h("a", {href, class}, child, "text", [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

/** An SVG element: svg("polyline", {points}) (attributes only; children appended by the caller). */
export function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) if (value != null) el.setAttribute(key, String(value));
  return el;
}

/** An icon from the inline sprite (web/templates/_sprite.html). */
export function icon(name, cls = "") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", cls ? `icon ${cls}` : "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

export const debounce = (fn, ms) => {
  let timer = 0;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
};

/** Run at most once per `ms`, and always once more after the last call (trailing edge). */
export const throttle = (fn, ms) => {
  let last = 0, timer = 0;
  return () => {
    const wait = last + ms - Date.now();
    if (timer) return;
    timer = setTimeout(() => { timer = 0; last = Date.now(); fn(); }, Math.max(0, wait));
  };
};

export const setText = (el, text) => { if (el && el.textContent !== text) el.textContent = text; };
export const capitalize = (text) => (text ? text[0].toUpperCase() + text.slice(1) : "");
export const byData = (root, name, value) => root.querySelector(`[data-${name}="${CSS.escape(value)}"]`);
