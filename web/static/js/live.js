// The live stream: one EventSource per tab on /api/events feeds every update (no polling
// anywhere). Pages subscribe with live.on(kind, fn); "resync" is emitted when events may
// have been missed, so pages load their data again.

import { api, goToLogin } from "./api.js";
import { APP, CAN, NO_STREAM_PAGES, PAGE_NAME } from "./data.js";
import { $, setText, throttle } from "./dom.js";
import { refreshTimes } from "./fmt.js";

// The event kinds the server streams, named once in Python (dragonfly/events.py).
const STREAM_KINDS = APP.stream_kinds || [];

export const live = {
  handlers: {},
  dropped: false,  // the stream broke (or the server said it fell behind): events were missed
  failures: 0,     // consecutive times the browser gave up on the stream
  on(kind, fn) { (this.handlers[kind] ||= []).push(fn); },
  emit(kind, message) {
    for (const fn of this.handlers[kind] || []) {
      try { fn(message); } catch (err) { console.error(`live ${kind} handler failed`, err); }
    }
  },
  status(state, label) {
    const el = $("#live");
    if (!el) return;
    el.dataset.status = state;
    setText(el.querySelector(".live-text"), label);
    el.title = `Live updates: ${label.toLowerCase()}`;
  },
  start() {
    if (NO_STREAM_PAGES.has(PAGE_NAME) || !CAN.read) {
      const el = $("#live");
      if (el) el.hidden = true;
      return;
    }
    if (!("EventSource" in window)) { this.status("offline", "No live updates"); return; }
    this.connect();
  },
  connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("hello", () => {
      this.status("live", "Live");
      this.failures = 0;
      // The server does not replay what was missed (it ignores Last-Event-ID), so pages load
      // their data again, now that the new stream already collects changes. At most once per
      // 5 s, however often the connection flaps.
      if (this.dropped) { this.dropped = false; this.resync(); }
    });
    for (const kind of STREAM_KINDS) {
      source.addEventListener(kind, (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        this.emit(kind, message);
        refreshTimes();
      });
    }
    // This stream fell behind; the server closes it and the browser reconnects: reload then.
    source.addEventListener("resync", () => { this.dropped = true; });
    source.onerror = () => {
      this.dropped = true;
      if (source.readyState !== EventSource.CLOSED) { this.status("reconnecting", "Reconnecting"); return; }
      // The browser gave up (the server refused the stream or is gone): back off, then check
      // whether we may still read before trying again.
      source.close();
      this.status("offline", "Offline");
      this.retryLater();
    };
  },
  retryLater() {
    this.failures += 1;
    setTimeout(() => this.recover(), Math.min(60, 2.5 * 2 ** this.failures) * 1000); // 5 s … 60 s
  },
  async recover() {
    try {
      const session = await api("GET", "/api/auth/session");
      if (session?.user?.can && !session.user.can.read) { goToLogin(); return; }
    } catch (err) {
      if (err.status === 0) { this.retryLater(); return; } // still unreachable
    }
    this.status("reconnecting", "Reconnecting");
    this.connect();
  },
};
live.resync = throttle(() => live.emit("resync", {}), 5000);
