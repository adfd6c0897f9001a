// The account menu in the top bar: keyboard handling, sign-out, and the demo's role switcher.

import { api } from "./api.js";
import { $, $$ } from "./dom.js";
import { showError } from "./toast.js";

export function initAccountMenu() {
  const menu = $("#account-menu");
  if (!menu) return;
  const summary = menu.querySelector("summary");
  const close = (focus) => { menu.open = false; if (focus) summary.focus(); };
  document.addEventListener("click", (e) => { if (menu.open && !menu.contains(e.target)) close(false); });
  document.addEventListener("focusin", (e) => { if (menu.open && !menu.contains(e.target)) close(false); });
  menu.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && menu.open) { e.preventDefault(); close(true); return; }
    if (!menu.open || (e.key !== "ArrowDown" && e.key !== "ArrowUp")) return;
    const items = $$(".menu-item, .role-option", menu);
    const at = items.indexOf(document.activeElement);
    const down = e.key === "ArrowDown";
    e.preventDefault();
    items[at < 0 ? (down ? 0 : items.length - 1) : (at + (down ? 1 : items.length - 1)) % items.length]?.focus();
  });

  menu.querySelector("[data-logout]")?.addEventListener("click", async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await api("POST", "/api/auth/logout");
    } catch (err) {
      button.disabled = false;
      showError(err, "Cannot sign out");
      return;
    }
    location.assign("/login");
  });

  // The demo's role switcher: a cookie on the server side; reload to see the panel as that role.
  for (const option of $$("[data-demo-role]", menu)) {
    option.addEventListener("click", async () => {
      if (option.getAttribute("aria-pressed") === "true") { close(true); return; }
      option.setAttribute("aria-busy", "true");
      try {
        await api("POST", "/api/demo/role", { role: option.dataset.demoRole });
      } catch (err) {
        option.removeAttribute("aria-busy");
        showError(err, "Cannot switch roles");
        return;
      }
      // Account and admin pages are not for every role: land on the dashboard from those.
      if (/^\/(account|admin)(\/|$)/.test(location.pathname)) location.assign("/");
      else location.reload();
    });
  }
}
