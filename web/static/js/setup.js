// The demo's Advanced Setup dialog (web/templates/_install_dialogs.html).

import { $, setText } from "./dom.js";

/** Advanced Setup: compose the install command from the chosen options as they change. */
export function initSetup() {
  const form = $("#adv-form");
  const out = $("#adv-command");
  if (!form || !out) return;
  const error = $("#adv-error");
  const update = () => {
    const parts = [out.dataset.base];
    const problems = [];
    const mode = form.elements.mode.value;
    const dhcp = form.elements.dhcp.value;
    const iface = form.elements.interface.value.trim();
    const port = form.elements.port.value.trim();
    if (mode && mode !== out.dataset.defaultMode) parts.push("--mode", mode);
    // Linux interface names: 1-15 characters, no slash or whitespace.
    const ifaceOk = !iface || (/^[A-Za-z0-9_.:@-]{1,15}$/.test(iface) && iface !== "." && iface !== "..");
    if (!ifaceOk) problems.push("An interface name has 1–15 letters, digits or . _ - : @ (like eno1).");
    else if (iface) parts.push("--interface", iface);
    if (dhcp && dhcp !== out.dataset.defaultDhcp) parts.push("--dhcp-mode", dhcp);
    const portNumber = Number(port);
    const portOk = !port || (Number.isInteger(portNumber) && portNumber >= 1 && portNumber <= 65535);
    if (!portOk) problems.push("The port is a whole number from 1 to 65535.");
    else if (port && String(portNumber) !== out.dataset.defaultPort) parts.push("--port", String(portNumber));
    if (form.elements.dry_run.checked) parts.push("--dry-run");
    // A class, not :has(:checked), which Chromium restyles late after a keyboard or script change.
    for (const radio of form.querySelectorAll('input[type="radio"]')) radio.closest(".option")?.classList.toggle("is-checked", radio.checked);
    setText(out, parts.join(" "));
    form.elements.interface.setAttribute("aria-invalid", String(!ifaceOk));
    form.elements.port.setAttribute("aria-invalid", String(!portOk));
    error.hidden = problems.length === 0;
    setText(error, problems.join(" "));
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", (e) => e.preventDefault());
  update();
}
