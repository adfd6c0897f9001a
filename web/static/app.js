// Dragonfly panel script: ES modules under js/, no dependencies, no build step.
//
// The server renders every page complete; these modules make it live. One EventSource on
// /api/events feeds all updates (no polling anywhere), and every change goes through the JSON
// API with errors shown as toasts or next to the field. This entry wires what every page has
// (theme, dialogs, account menu, safety mode), then the page's own module (PAGES), then the
// stream. base.html's import map gives each module its versioned (immutable) URL.

import { initAccountMenu } from "./js/account.js";
import { initDashboard } from "./js/dashboard.js";
import { PAGE_NAME } from "./js/data.js";
import { initDialogs } from "./js/dialogs.js";
import { initEnclosures } from "./js/enclosures.js";
import { refreshTimes } from "./js/fmt.js";
import { initSafety } from "./js/guards.js";
import { live } from "./js/live.js";
import { initMachine } from "./js/machine.js";
import { initMachines } from "./js/machines.js";
import { initSetup } from "./js/setup.js";
import { initTags } from "./js/tags.js";
import { initTemplates } from "./js/templates.js";
import { initTheme } from "./js/theme.js";
import { initTinkerbell } from "./js/tinkerbell.js";

const PAGES = { dashboard: initDashboard, machines: initMachines, machine: initMachine, tags: initTags, templates: initTemplates,
  enclosures: initEnclosures, tinkerbell: initTinkerbell };

initTheme();
initDialogs();
initSetup();
initAccountMenu();
initSafety();
PAGES[PAGE_NAME]?.();
live.start();
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshTimes(); });
