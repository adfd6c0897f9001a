// A BMC record's fields as the adopt dialog (machines/adopt.js) and the enclosures page show
// them: one control per field, labelled in the chosen driver's words (machine/bmc.js), the
// password write-only ("password set", never shown), and the body the API takes.

import { $, $$, h } from "./dom.js";
import { DRIVER_FIELDS, words } from "./machine/bmc.js";

const PASSWORD_SET = "Password set: leave empty to keep it";

/** The fields of `fields` that `driver` reads. */
export const fieldsFor = (driver, fields) => {
  const reads = new Set(DRIVER_FIELDS[driver] || fields);
  return fields.filter((f) => reads.has(f));
};

/** One field's box: label, control (id `${prefix}-${field}`), help; the password a "clear" box. */
export function recordField(prefix, field) {
  const id = `${prefix}-${field.replace("_", "-")}`;
  const help = h("p", { class: "help", id: `${id}-help`, "data-help": field });
  const described = { id, name: field, "aria-describedby": help.id };
  if (field === "insecure") {
    return h("div", { class: "field", "data-field-for": field },
      h("label", { class: "check", for: id }, h("input", { type: "checkbox", ...described }), h("span", { "data-label": field })), help);
  }
  const control = field === "ca_pem" ? h("textarea", { ...described, rows: "3", spellcheck: "false", class: "mono" })
    : field === "port" ? h("input", { ...described, type: "number", min: "0", max: "65535", inputmode: "numeric" })
      : field === "password" ? h("input", { ...described, type: "password", autocomplete: "new-password" })
        : h("input", { ...described, autocomplete: "off", spellcheck: "false" });
  const clear = field === "password" ? h("label", { class: "check small", "data-clear-password": "", hidden: true },
    h("input", { type: "checkbox", name: "clear_password" }), "Remove the stored password") : null;
  return h("div", { class: "field", "data-field-for": field }, h("label", { for: id, "data-label": field }), control, help, clear);
}

/** Show the boxes `driver` reads, in its words; `passwordSet` says a password is stored. */
export function showFields(form, driver, fields, { passwordSet = false } = {}) {
  const wanted = new Set(fieldsFor(driver, fields));
  for (const wrap of $$("[data-field-for]", form)) {
    const field = wrap.dataset.fieldFor;
    wrap.hidden = !wanted.has(field);
    const [label, placeholder, help] = words(field, driver);
    for (const l of $$("[data-label]", wrap)) l.textContent = label;
    $("[data-help]", wrap).textContent = help;
    const input = form.elements[field];
    if (field === "password") {
      input.placeholder = passwordSet ? PASSWORD_SET : placeholder;
      $("[data-clear-password]", wrap).hidden = !passwordSet;
    } else if (input.type !== "checkbox") input.placeholder = placeholder;
  }
}

/** Fill the boxes from a saved record (public: no password). */
export function fillFields(form, record, fields) {
  for (const field of fields) {
    const input = form.elements[field];
    if (field === "insecure") input.checked = Boolean(record.insecure);
    else if (field === "port") input.value = record.port ? String(record.port) : "";
    else if (field === "password") input.value = "";
    else input.value = record[field] || "";
  }
}

/**
 * The fields `driver` reads as the API takes them. The password is write-only: sent when
 * typed, "" when the operator asked to remove it, left out otherwise (the stored one stays).
 */
export function fieldsBody(form, driver, fields) {
  const body = {};
  for (const field of fieldsFor(driver, fields)) {
    const input = form.elements[field];
    if (field === "insecure") body.insecure = input.checked;
    else if (field === "port") body.port = Number.parseInt(input.value || "0", 10) || 0;
    else if (field === "password") {
      if (input.value) body.password = input.value;
      else if (form.elements.clear_password?.checked) body.password = "";
    } else if (field === "ca_pem") body.ca_pem = input.value.trim();
    else body[field] = input.value.trim();
  }
  return body;
}

/** Mark the field an API error names (detail.field) and focus it. */
export function markField(form, err) {
  for (const input of $$("[aria-invalid]", form)) input.removeAttribute("aria-invalid");
  const input = form.elements[err?.detail?.field];
  if (input && input.setAttribute) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}
