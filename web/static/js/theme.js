// The light/dark switch. base.html sets the theme before first paint; this follows the button
// and, until the user picks one, the system's preference.

import { $ } from "./dom.js";

const THEME_KEY = "dragonfly-theme";

export function initTheme() {
  const root = document.documentElement;
  const button = $("#theme-toggle");
  const stored = () => { try { return localStorage.getItem(THEME_KEY); } catch { return null; } };
  const apply = (theme) => {
    root.dataset.theme = theme;
    button?.setAttribute("aria-label", theme === "dark" ? "Switch to light theme" : "Switch to dark theme");
  };
  apply(root.dataset.theme === "light" ? "light" : "dark");
  button?.addEventListener("click", () => {
    const next = root.dataset.theme === "dark" ? "light" : "dark";
    try { localStorage.setItem(THEME_KEY, next); } catch { /* private mode: this page only */ }
    apply(next);
  });
  // Until the user picks a theme, follow the system's.
  window.matchMedia?.("(prefers-color-scheme: light)").addEventListener?.("change", (e) => {
    if (!stored()) apply(e.matches ? "light" : "dark");
  });
}
