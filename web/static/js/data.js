// What the server handed over: the app-data (every page) and page-data (this page's handler)
// JSON blocks of web/templates/base.html, and what follows from them.

const readJSON = (id) => {
  const el = document.getElementById(id);
  try { return el ? JSON.parse(el.textContent) : {}; } catch { return {}; }
};

// templates, operator actions and their icons, states, arch names, event stream kinds
export const APP = readJSON("app-data");
export const PAGE = readJSON("page-data"); // what this page's server handler handed over
export const PAGE_SIZE = PAGE.page_size || 100;
// What the caller may do (from access control); the API enforces it, the pages hide the rest.
export const CAN = {
  read: APP.can?.read !== false,
  write: APP.can?.write !== false,
  admin: APP.can?.admin !== false, // templates.js used it before it was defined here
  action: (a) => APP.can?.actions?.[a] !== false,
};
export const PAGE_NAME = document.body.dataset.page;
// Pages for callers who cannot read the fleet (yet): no event stream, no sign-in redirects.
export const NO_STREAM_PAGES = new Set(["login", "setup", "denied"]);
export const SIGN_IN_PAGES = new Set(["login", "setup"]);
export const SERVER_SKEW = PAGE.now ? PAGE.now - Date.now() / 1000 : 0; // server clock minus ours, s

export const templateName = (slug) => (APP.templates || {})[slug] || slug;
