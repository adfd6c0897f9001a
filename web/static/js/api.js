// The JSON API: every change the pages make goes through api().

import { PAGE_NAME, SIGN_IN_PAGES } from "./data.js";
import { toast } from "./toast.js";

export class ApiError extends Error {
  constructor(message, detail, status) { super(message); this.detail = detail; this.status = status; }
}

/**
 * JSON in, JSON out; a non-2xx answer becomes an ApiError carrying the API's {error, detail}.
 * `quiet`: the caller shows a 423 refusal itself (no "locked" toast).
 */
export async function api(method, url, body, { quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content; // once logins exist
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(url, init); } catch (err) {
    throw new ApiError("Cannot reach Dragonfly", "The server did not answer; is it still running?", 0);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(data?.error || `${res.status} ${res.statusText}`, data?.detail, res.status);
    if (res.status === 401 && !SIGN_IN_PAGES.has(PAGE_NAME)) {
      // The session ended (or never was): sign in, then come back here.
      err.shown = true;
      goToLogin();
    } else if (res.status === 423 && !quiet) {
      // Safety mode or a node lock refused it: the server's text says which and why.
      err.shown = true;
      toast(err.detail?.safety ? "Safety mode is on" : "This machine is locked", err.message, "error", "lock");
    }
    throw err;
  }
  return data;
}

export function goToLogin() {
  const here = location.pathname + location.search;
  // Readable like the server's own redirects ("/" "?" "=" kept); "&" stays escaped so the
  // whole query comes back.
  const next = encodeURIComponent(here).replace(/%2F/g, "/").replace(/%3F/g, "?").replace(/%3D/g, "=");
  location.assign(`/login?next=${next}`);
}
