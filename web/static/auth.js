// Forms of the access-control pages (sign-in, setup, account, tokens, people, security).
// A <form data-api="/api/..."> is sent as JSON to that endpoint (data-method, default POST)
// with the page's CSRF token; the answer either moves the browser on (data-next or the
// answer's "next"), reloads (data-reload), or fills the element named by data-result: each
// [data-field=KEY] inside gets the answer's KEY as text (a list for arrays) and each
// [data-field-src=KEY] gets it as its src. Buttons with data-api do the same with the JSON in
// data-body, after the question in data-confirm. Nothing here is needed for security: the
// server enforces everything; this only makes the pages usable.
(function () {
  "use strict";

  function csrfToken() {
    var page = document.getElementById("auth-page");
    if (page && page.dataset.csrf) return page.dataset.csrf;
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function send(url, method, body) {
    var headers = { "Accept": "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var token = csrfToken();
    if (token) headers["X-CSRF-Token"] = token;
    var res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      return { ok: false, status: 0, data: { error: "The server cannot be reached." } };
    }
    var data = {};
    try { data = await res.json(); } catch (err) { data = {}; }
    return { ok: res.ok, status: res.status, data: data };
  }

  function collect(form) {
    var body = {};
    var problem = "";
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled || el.dataset.local !== undefined) {
        if (el.dataset && el.dataset.sameAs) {
          var other = form.elements[el.dataset.sameAs];
          if (other && other.value !== el.value) problem = el.dataset.mismatch || "The two entries differ.";
        }
        return;
      }
      if (el.closest("[hidden]") && el.dataset.always === undefined) return;
      var value;
      if (el.type === "checkbox") value = el.checked;
      else if (el.type === "number") {
        if (el.value === "") return;
        value = Number(el.value);
      } else if (el.dataset.lines !== undefined) {
        value = el.value.split(/[\n,]/).map(function (s) { return s.trim(); })
          .filter(function (s) { return s; });
      } else {
        value = el.value;
        if (value === "" && el.dataset.optional !== undefined) return;
      }
      body[el.name] = value;
    });
    if (form.dataset.extra) Object.assign(body, JSON.parse(form.dataset.extra));
    return { body: body, problem: problem };
  }

  function showError(scope, message) {
    var box = scope.querySelector("[data-error]");
    if (!box) { window.alert(message); return; }
    box.textContent = message;
    box.hidden = !message;
  }

  function fill(target, data) {
    target.querySelectorAll("[data-field]").forEach(function (el) {
      var value = data[el.dataset.field];
      if (Array.isArray(value)) {
        el.textContent = "";
        value.forEach(function (item) {
          var li = document.createElement("li");
          li.textContent = item;
          el.appendChild(li);
        });
      } else {
        el.textContent = value === undefined || value === null ? "" : String(value);
      }
    });
    target.querySelectorAll("[data-field-src]").forEach(function (el) {
      el.src = data[el.dataset.fieldSrc] || "";
    });
    target.hidden = false;
  }

  function afterSuccess(el, data) {
    if (el.dataset.result) {
      var target = document.querySelector(el.dataset.result);
      if (target) fill(target, data);
      if (el.dataset.hideOnSuccess !== undefined) el.hidden = true;
      var focus = target && target.querySelector("input, button, [tabindex]");
      if (focus) focus.focus();
      return;
    }
    if (el.dataset.reload !== undefined) { window.location.reload(); return; }
    var next = el.dataset.next || data.next;
    if (next) window.location.assign(next);
  }

  async function submitForm(form) {
    var collected = collect(form);
    if (collected.problem) { showError(form, collected.problem); return; }
    showError(form, "");
    var button = form.querySelector('[type="submit"]');
    if (button) button.disabled = true;
    var result = await send(form.dataset.api, form.dataset.method || "POST", collected.body);
    if (button) button.disabled = false;
    if (result.ok) { afterSuccess(form, result.data); return; }
    var detail = result.data.detail || {};
    if (detail.mfa_required) {
      // Sign-in: the password was right; now the second factor.
      var field = form.querySelector("[data-mfa-field]");
      if (field) {
        var wasHidden = field.hidden;
        field.hidden = false;
        var input = field.querySelector("input");
        if (input) { input.focus(); if (!wasHidden) input.select(); }
        if (wasHidden) { showError(form, ""); return; }
      }
    }
    showError(form, result.data.error || ("Request failed (" + result.status + ")."));
  }

  async function clickButton(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    var body;
    if (button.dataset.body) body = JSON.parse(button.dataset.body);
    button.disabled = true;
    var result = await send(button.dataset.api, button.dataset.method || "POST", body);
    button.disabled = false;
    if (result.ok) { afterSuccess(button, result.data); return; }
    var scope = button.closest("[data-error-scope]") || document;
    showError(scope, result.data.error || ("Request failed (" + result.status + ")."));
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
    event.preventDefault();
    submitForm(form);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-api]");
    if (!button || button.form && button.form.dataset.api && button.type === "submit") return;
    event.preventDefault();
    clickButton(button);
  });
})();
