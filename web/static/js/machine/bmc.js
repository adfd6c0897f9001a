// The machine page's BMC record (admins): the power driver and the fields that driver uses,
// pre-filled from the BMC the discovery agent reported when there is no record yet. Save
// (PUT), Remove (DELETE) and Test connection (each check's outcome and reason, verbatim). The
// password is write-only: the form never shows it, only whether one is set.

import { api } from "../api.js";
import { APP } from "../data.js";
import { modal } from "../dialogs.js";
import { $, $$, h, icon } from "../dom.js";
import { showError, toast } from "../toast.js";

// The record's fields each driver reads (dragonfly/power/drivers/__init__.py's factories);
// the adopt dialog (machines/adopt.js) and the enclosures page use them too.
export const DRIVER_FIELDS = {
  ipmi: ["address", "port", "user", "password"],
  redfish: ["address", "port", "user", "password", "system", "ca_pem", "insecure"],
  openjbod: ["address", "port", "user", "password", "ca_pem", "insecure", "enclosure"],
  wol: ["mac", "broadcast", "port", "password"],
  fake: ["address", "user", "password"],
};
const TEXT_FIELDS = ["address", "user", "system", "ca_pem", "mac", "broadcast", "enclosure"];
const ALL_FIELDS = [...TEXT_FIELDS, "port", "password", "insecure"];
const fieldsOf = (driver) => DRIVER_FIELDS[driver] || ALL_FIELDS;

// Per driver: [label, placeholder, help] where they differ from the default ("*").
const WORDS = {
  address: {
    "*": ["Address", "10.0.0.21", "The BMC's IP address or host name."],
    redfish: ["Address", "10.0.0.21", "Host name, IP address or HTTPS URL of the BMC."],
    openjbod: ["Address", "10.0.0.40", "Host name, IP address or URL of the enclosure's controller."],
    fake: ["Address", "fake-bmc-1", "Simulated: nothing is contacted. An address starting with “unreachable” times out, one starting with “refuse” rejects the credentials."],
  },
  port: {
    "*": ["Port", "0", "0: the driver's default."],
    ipmi: ["Port", "623", "0: 623, IPMI's own."],
    wol: ["Port", "9", "0: 9, the usual Wake-on-LAN port."],
  },
  user: {
    "*": ["User", "", ""],
    openjbod: ["User", "admin", "Basic auth. Empty: the password is sent as a bearer token, as newer firmware wants."],
  },
  password: {
    "*": ["Password", "", "Stored encrypted; never shown again."],
    wol: ["SecureOn password", "aa:bb:cc:dd:ee:ff", "Optional: 4 or 6 bytes, as hex or a dotted quad."],
  },
  system: { "*": ["Redfish system", "/redfish/v1/Systems/1", "Empty: the BMC's only system."] },
  ca_pem: {
    "*": ["CA bundle (PEM)", "-----BEGIN CERTIFICATE-----", "Trust the BMC's certificate through this CA instead of the system's."],
    openjbod: ["CA bundle (PEM)", "-----BEGIN CERTIFICATE-----", "For an HTTPS address: trust the controller's certificate through this CA instead of the system's."],
  },
  insecure: {
    "*": ["Skip TLS verification (insecure)", "", "Only for a BMC whose certificate cannot be verified: anyone on the path could pose as it."],
    openjbod: ["Skip TLS verification (insecure)", "", "Only for a controller whose certificate cannot be verified: anyone on the path could pose as it."],
  },
  mac: { "*": ["MAC to wake", "aa:bb:cc:dd:ee:ff", "The network card that wakes the machine."] },
  broadcast: { "*": ["Broadcast address", "10.0.0.255", "Empty: the boot network's directed broadcast."] },
  enclosure: { "*": ["Enclosure", "", "Optional: which enclosure this controller drives."] },
};
export const words = (field, driver) => WORDS[field][driver] || WORDS[field]["*"];

/** Builds the form in #bmc-config; `changed()` is told after a save or removal. */
export function initBmc(ctx, { changed }) {
  const box = $("#bmc-config");
  if (!box) return { load: async () => {} };
  const base = `/api/machines/${encodeURIComponent(ctx.id)}/bmc`;
  let drivers = [];
  let record = null; // the saved record (public: no password), or null
  let suggested = {};

  const control = (field) => {
    const id = `bmc-${field.replace("_", "-")}`;
    if (field === "insecure") return h("input", { type: "checkbox", id, name: field });
    if (field === "ca_pem") return h("textarea", { id, name: field, rows: "4", spellcheck: "false", class: "mono" });
    if (field === "port") return h("input", { id, name: field, type: "number", min: "0", max: "65535", inputmode: "numeric" });
    if (field === "password") return h("input", { id, name: field, type: "password", autocomplete: "new-password" });
    return h("input", { id, name: field, autocomplete: "off", spellcheck: "false" });
  };

  const fieldBox = (field) => {
    const input = control(field);
    const label = h("label", { for: input.id, "data-label": field });
    const help = h("p", { class: "help", id: `${input.id}-help`, "data-help": field });
    input.setAttribute("aria-describedby", help.id);
    if (field === "insecure") return h("div", { class: "field", "data-field-for": field }, h("label", { class: "check", for: input.id }, input, h("span", { "data-label": field })), help);
    const extra = field === "password" ? h("label", { class: "check small", "data-clear-password": "", hidden: true },
      h("input", { type: "checkbox", name: "clear_password" }), "Remove the stored password") : null;
    return h("div", { class: "field", "data-field-for": field }, label, input, help, extra);
  };

  const form = h("form", { class: "bmc-form", id: "bmc-form", novalidate: true, "aria-labelledby": "bmc-form-title" },
    h("div", { class: "bmc-form-head" },
      h("h3", { id: "bmc-form-title" }, icon("sliders"), "Power control"),
      h("p", { class: "help", "data-field": "bmc-status" })),
    h("div", { class: "field" },
      h("label", { for: "bmc-driver" }, "Driver"),
      h("select", { id: "bmc-driver", name: "driver", "aria-describedby": "bmc-driver-help" }),
      h("p", { class: "help", id: "bmc-driver-help", "data-field": "driver-help" })),
    ALL_FIELDS.map(fieldBox),
    h("p", { class: "field-error", role: "alert", "data-field": "bmc-error", hidden: true }),
    h("div", { class: "btn-row bmc-buttons" },
      h("button", { type: "submit", class: "btn btn-sm btn-primary", "data-bmc": "save" }, icon("check"), "Save"),
      h("button", { type: "button", class: "btn btn-sm", "data-bmc": "test", title: "Log in and read what the driver can read, with the saved settings" }, icon("activity"), "Test connection"),
      h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-bmc": "remove" }, icon("trash"), "Remove")),
    h("div", { class: "bmc-test", "data-field": "bmc-test", "aria-live": "polite" }));
  const el = (name) => form.elements[name];
  const errorBox = $('[data-field="bmc-error"]', form);

  /** Show the fields the chosen driver reads, in its words. */
  const showFields = () => {
    const driver = el("driver").value;
    const wanted = new Set(fieldsOf(driver));
    for (const wrap of $$("[data-field-for]", form)) {
      const field = wrap.dataset.fieldFor;
      wrap.hidden = !wanted.has(field);
      const [label, placeholder, help] = words(field, driver);
      for (const l of $$("[data-label]", wrap)) l.textContent = label;
      $("[data-help]", wrap).textContent = help;
      const input = el(field);
      if (field === "password") {
        const set = record?.has_password && record.driver === driver;
        input.placeholder = set ? "Password set: leave empty to keep it" : placeholder;
        $("[data-clear-password]", wrap).hidden = !set;
      } else if (input.type !== "checkbox") input.placeholder = placeholder;
    }
    const spec = drivers.find((d) => d.name === driver);
    $('[data-field="driver-help"]', form).textContent = spec
      ? `${spec.summary}. Can: ${spec.supports.join(", ").replaceAll("_", " ")}.` : "";
  };

  const fill = () => {
    const values = record || { driver: suggested.driver, address: suggested.address || "" };
    const fallback = APP.demo ? "fake" : "ipmi";
    const driver = drivers.some((d) => d.name === values.driver) ? values.driver : fallback;
    const select = el("driver");
    select.replaceChildren(...drivers.map((d) => h("option", { value: d.name }, d.name)));
    select.value = driver;
    for (const field of TEXT_FIELDS) el(field).value = values[field] || "";
    el("port").value = values.port ? String(values.port) : "";
    el("insecure").checked = Boolean(values.insecure);
    el("password").value = "";
    el("clear_password").checked = false;
    const status = $('[data-field="bmc-status"]', form);
    status.replaceChildren(record
      ? `Saved: ${record.driver}${record.address || record.mac ? ` at ${record.address || record.mac}` : ""}${record.has_password ? " · password set" : ""}.`
      : suggested.address ? `Not set up yet. Suggested from the BMC the discovery agent reported (${suggested.address}): check it and save.`
        : "Not set up yet: choose the driver and how to reach the BMC.");
    $('[data-bmc="remove"]', form).hidden = !record;
    $('[data-bmc="test"]', form).disabled = !record;
    $('[data-bmc="test"]', form).title = record ? "Log in and read what the driver can read, with the saved settings" : "Save the record first";
    showFields();
    clearErrors();
  };

  const clearErrors = () => {
    errorBox.hidden = true;
    for (const input of $$("[aria-invalid]", form)) input.removeAttribute("aria-invalid");
  };

  const fail = (err, what) => {
    if (err.shown) return;
    const field = err.detail?.field;
    errorBox.textContent = `${what}: ${err.message}`;
    errorBox.hidden = false;
    if (field && el(field)) { el(field).setAttribute("aria-invalid", "true"); el(field).focus(); }
  };

  /** The record as the API takes it: the chosen driver's fields, the others emptied. */
  const bodyOf = () => {
    const driver = el("driver").value;
    const wanted = new Set(fieldsOf(driver));
    const body = { driver };
    for (const field of TEXT_FIELDS) body[field] = wanted.has(field) ? el(field).value.trim() : "";
    body.port = wanted.has("port") ? Number.parseInt(el("port").value || "0", 10) || 0 : 0;
    body.insecure = wanted.has("insecure") && el("insecure").checked;
    const typed = el("password").value;
    // Write-only: sent when typed; emptied when asked to, or when it belonged to another driver.
    if (typed && wanted.has("password")) body.password = typed;
    else if (el("clear_password").checked || (record && record.driver !== driver) || !wanted.has("password")) body.password = "";
    return body;
  };

  const busy = async (button, fn) => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try { return await fn(); } finally { button.disabled = false; button.removeAttribute("aria-busy"); }
  };

  const save = async () => {
    clearErrors();
    let saved;
    try {
      saved = await busy($('[data-bmc="save"]', form), () => api("PUT", base, bodyOf()));
    } catch (err) { fail(err, "Cannot save"); return; }
    record = saved;
    $('[data-field="bmc-test"]', form).replaceChildren();
    fill();
    toast(`Saved the BMC of ${ctx.machine.name}`, `${saved.driver}${saved.has_password ? ", password set" : ""}. Its power status follows shortly.`);
    changed();
  };

  const remove = async () => {
    const done = await modal({
      title: `Remove the BMC of ${ctx.machine.name}`, iconName: "trash", danger: true, confirmLabel: "Remove",
      body: [h("p", {}, "Dragonfly forgets how to reach this machine's BMC, and its stored password: no more power status or power actions here until it is set up again. The BMC itself is not touched.")],
      onConfirm: () => api("DELETE", base),
    });
    if (!done) return;
    record = null;
    $('[data-field="bmc-test"]', form).replaceChildren();
    await load();
    toast(`Removed the BMC of ${ctx.machine.name}`);
    changed();
  };

  const step = (s) => h("li", { class: `bmc-step ${s.ok ? "ok" : "failed"}`, "data-step": s.step },
    icon(s.ok ? "check-circle" : "x-circle"),
    h("span", { class: "bmc-step-name" }, s.step),
    s.value != null ? h("span", { class: "bmc-step-value mono" }, typeof s.value === "number" ? `${s.value} W` : String(s.value)) : null,
    s.reason ? h("span", { class: "pill pill-danger" }, s.reason) : null,
    s.detail ? h("span", { class: "bmc-step-detail" }, s.detail) : null);

  const test = async () => {
    const out = $('[data-field="bmc-test"]', form);
    out.replaceChildren(h("p", { class: "muted small" }, icon("spinner", "spin"), " Testing the saved settings…"));
    let result;
    try {
      result = await busy($('[data-bmc="test"]', form), () => api("POST", `${base}/test`));
    } catch (err) {
      out.replaceChildren();
      fail(err, "Cannot test");
      return;
    }
    out.replaceChildren(
      h("p", { class: `bmc-test-title ${result.ok ? "ok" : "failed"}`, "data-ok": String(result.ok) },
        icon(result.ok ? "check-circle" : "x-circle"),
        result.ok ? `The ${result.driver} BMC answered.` : h("span", {}, "Failed: ", h("span", { class: "bmc-test-reason" }, result.reason))),
      h("ol", { class: "bmc-steps" }, (result.steps || []).map(step)));
  };

  form.addEventListener("submit", (e) => { e.preventDefault(); save(); });
  form.addEventListener("change", (e) => { if (e.target === el("driver")) showFields(); });
  form.addEventListener("input", (e) => { if (e.target.matches?.("[aria-invalid]")) e.target.removeAttribute("aria-invalid"); });
  form.addEventListener("click", (e) => {
    const button = e.target.closest("[data-bmc]");
    if (!button) return;
    if (button.dataset.bmc === "test") test();
    else if (button.dataset.bmc === "remove") remove();
  });

  async function load() {
    try {
      const [list, bmc] = await Promise.all([
        drivers.length ? drivers : api("GET", "/api/power/drivers"),
        // 404: no record (and no suggestion), from servers that answer so.
        api("GET", base).catch((err) => { if (err.status === 404) return { configured: false, suggested: {} }; throw err; }),
      ]);
      drivers = list;
      record = bmc.configured === false ? null : bmc;
      suggested = bmc.configured === false ? bmc.suggested || {} : {};
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load the BMC record");
      return;
    }
    if (!form.isConnected) box.replaceChildren(form);
    fill();
  }

  return { load };
}
