// The enclosures page (admins): OpenJBOD enclosures registered (POST /api/enclosures), edited
// (PUT: the password is write-only, the form says "password set" and never shows it),
// attached to the machines whose disks they hold, and removed (DELETE). Their state is on the
// attached machines' pages, asked of the controller there.

import { ApiError, api } from "./api.js";
import { fieldsBody, fillFields, markField, recordField, showFields } from "./bmc-fields.js";
import { PAGE } from "./data.js";
import { modal } from "./dialogs.js";
import { $, debounce, h, icon } from "./dom.js";
import { live } from "./live.js";
import { showError, toast } from "./toast.js";

const DRIVER = "openjbod"; // every enclosure's (dragonfly/power/enclosures.py)
const FIELDS = ["address", "port", "user", "password", "ca_pem", "insecure"];
const SUGGESTIONS = 20; // machines offered while typing

/** The machines attached, as removable chips, and a search box to attach more. */
function machinePicker(attached, names) {
  const chosen = new Map(attached.map((id) => [id, names.get(id) || id]));
  const chips = h("ul", { class: "tag-list attach-list", "data-field": "attached", "aria-label": "Attached machines" });
  const search = h("input", { id: "enc-machine", list: "enc-machine-options", autocomplete: "off", spellcheck: "false",
    placeholder: "Name, MAC, IP or serial", "aria-describedby": "enc-machine-help" });
  const options = h("datalist", { id: "enc-machine-options" });
  const error = h("p", { class: "field-error", role: "alert", "data-field": "attach-error", hidden: true });

  const draw = () => {
    chips.replaceChildren(...[...chosen].map(([id, name]) => h("li", { class: "chip tag", "data-machine": id },
      h("span", {}, name),
      h("button", { type: "button", class: "chip-x", "data-detach": id, "aria-label": `Detach ${name}` }, icon("x")))));
    chips.dataset.count = String(chosen.size);
  };

  const lookup = async (text) => {
    const found = await api("GET", `/api/machines?q=${encodeURIComponent(text)}&limit=${SUGGESTIONS}`);
    options.replaceChildren(...found.items.filter((m) => !chosen.has(m.id)).map((m) =>
      h("option", { value: m.name }, [m.mac, m.ip, m.state].filter(Boolean).join(" · "))));
    return found.items;
  };
  const suggest = debounce(() => { if (search.value.trim()) lookup(search.value.trim()).catch(() => {}); }, 200);

  const attach = async () => {
    const text = search.value.trim();
    if (!text) { search.focus(); return; }
    let items;
    try { items = await lookup(text); } catch (err) { showError(err, "Cannot search the machines"); return; }
    const lower = text.toLowerCase();
    const match = items.find((m) => m.id === text || m.name.toLowerCase() === lower || m.mac === lower)
      || (items.length === 1 ? items[0] : null);
    if (!match) {
      error.textContent = items.length ? `${items.length} machines match “${text}”: type one's whole name.` : `No machine matches “${text}”.`;
      error.hidden = false;
      search.setAttribute("aria-invalid", "true");
      return;
    }
    chosen.set(match.id, match.name);
    names.set(match.id, match.name);
    search.value = "";
    search.removeAttribute("aria-invalid");
    error.hidden = true;
    draw();
    search.focus();
  };

  search.addEventListener("input", () => { error.hidden = true; search.removeAttribute("aria-invalid"); suggest(); });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); attach(); } }); // not the form's submit
  chips.addEventListener("click", (e) => {
    const x = e.target.closest("[data-detach]");
    if (!x) return;
    chosen.delete(x.dataset.detach);
    draw();
    search.focus();
  });
  draw();
  const el = h("div", { class: "field attach-field" },
    h("label", { for: "enc-machine" }, "Attached machines"),
    chips,
    h("div", { class: "inline-form" }, search,
      h("button", { type: "button", class: "btn btn-sm", "data-attach": "", onclick: attach }, icon("plus"), "Attach")),
    options,
    h("p", { class: "help", id: "enc-machine-help" }, "The machines whose disks it holds: their pages show it, and a lock on any of them refuses switching it."),
    error);
  return { el, ids: () => [...chosen.keys()] };
}

export function initEnclosures() {
  const rows = $("#enclosure-rows");
  if (!rows) return;
  const names = new Map(Object.entries(PAGE.names || {}));
  let enclosures = PAGE.enclosures || [];

  const machineLinks = (ids) => (ids.length ? ids.map((id) => h("a", { class: "chip tag", href: `/machines/${encodeURIComponent(id)}`, "data-machine": id }, names.get(id) || id))
    : [h("span", { class: "faint" }, "none")]);

  const row = (e) => h("tr", { "data-enclosure": e.name },
    h("td", { "data-label": "Name" }, h("span", { class: "strong" }, e.name)),
    h("td", { "data-label": "Controller" }, h("span", { class: "mono" }, e.address),
      e.port ? h("span", { class: "faint small" }, ` port ${e.port}`) : null,
      e.user ? h("span", { class: "faint small" }, ` as ${e.user}`) : null,
      e.has_password ? [" ", h("span", { class: "pill", "data-field": "password-set" }, "password set")] : null,
      e.insecure ? [" ", h("span", { class: "pill pill-danger" }, "TLS not verified")] : null,
      e.ca_pem ? [" ", h("span", { class: "pill" }, "own CA")] : null),
    h("td", { "data-label": "Machines" }, h("span", { class: "enclosure-machines" }, machineLinks(e.machines))),
    h("td", { class: "col-actions" },
      h("button", { type: "button", class: "btn btn-sm", "data-edit": e.name, "aria-label": `Edit enclosure ${e.name}` }, icon("edit"), h("span", { class: "btn-label" }, "Edit")),
      " ",
      h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-remove": e.name, "aria-label": `Remove enclosure ${e.name}` }, icon("trash"), h("span", { class: "btn-label" }, "Remove"))));

  const render = () => {
    rows.replaceChildren(...enclosures.map(row));
    $("#enclosures-table").hidden = enclosures.length === 0;
    $("#enclosures-empty").hidden = enclosures.length > 0;
  };

  const reload = async () => {
    try { enclosures = await api("GET", "/api/enclosures"); } catch (err) { showError(err, "Cannot load the enclosures"); return; }
    const unknown = [...new Set(enclosures.flatMap((e) => e.machines))].filter((id) => !names.has(id));
    await Promise.all(unknown.map(async (id) => {
      try { names.set(id, (await api("GET", `/api/machines/${encodeURIComponent(id)}`)).name); } catch { names.set(id, id); }
    }));
    render();
  };

  /** The register (record null) or edit form, in a dialog; resolves with the saved record. */
  const edit = async (record) => {
    const creating = !record;
    const nameInput = h("input", { id: "enc-name", name: "name", autocomplete: "off", spellcheck: "false", placeholder: "shelf-1",
      "aria-describedby": "enc-name-help", value: record?.name || null, readonly: creating ? null : true });
    const picker = machinePicker(record?.machines || [], names);
    const boxes = FIELDS.map((f) => recordField("enc", f));
    const status = h("p", { class: "help", "data-field": "enclosure-status" }, creating ? "Not registered yet."
      : `Saved: ${record.address}${record.has_password ? " · password set" : ""}.`);
    queueMicrotask(() => { // once the dialog's form holds the boxes
      const form = nameInput.form;
      if (record) fillFields(form, record, FIELDS);
      showFields(form, DRIVER, FIELDS, { passwordSet: Boolean(record?.has_password) });
    });
    return modal({
      title: creating ? "Register an enclosure" : `Edit enclosure ${record.name}`, iconName: creating ? "plus" : "edit",
      confirmLabel: creating ? "Register" : "Save", inlineErrors: true,
      body: [status,
        h("div", { class: "field" }, h("label", { for: "enc-name" }, "Name"), nameInput,
          h("p", { class: "help", id: "enc-name-help" }, creating ? "Lower-case letters, digits, '.', '_' and '-', as the machines' pages will show it."
            : "An enclosure keeps its name: register it again under another to rename it.")),
        ...boxes, picker.el],
      onConfirm: async (form) => {
        const body = { ...fieldsBody(form, DRIVER, FIELDS), machines: picker.ids() };
        try {
          return creating ? await api("POST", "/api/enclosures", { name: nameInput.value.trim(), ...body })
            : await api("PUT", `/api/enclosures/${encodeURIComponent(record.name)}`, body);
        } catch (err) {
          markField(form, err);
          throw new ApiError(err.message, null, err.status);
        }
      },
    });
  };

  const remove = async (name) => modal({
    title: `Remove enclosure ${name}`, iconName: "trash", danger: true, confirmLabel: "Remove",
    body: [h("p", {}, "Dragonfly forgets this enclosure and its stored password: the attached machines' pages no longer show it. The enclosure itself is not switched.")],
    onConfirm: () => api("DELETE", `/api/enclosures/${encodeURIComponent(name)}`),
  });

  $("#new-enclosure")?.addEventListener("click", async () => {
    const made = await edit(null);
    if (!made) return;
    toast(`Registered enclosure ${made.name}`, `${made.machines.length} attached ${made.machines.length === 1 ? "machine shows" : "machines show"} it now.`);
    reload();
  });
  rows.addEventListener("click", async (e) => {
    const editing = e.target.closest("[data-edit]");
    const removing = e.target.closest("[data-remove]");
    if (editing) {
      const record = enclosures.find((x) => x.name === editing.dataset.edit);
      if (!record) return;
      const saved = await edit(record);
      if (!saved) return;
      toast(`Saved enclosure ${saved.name}`, saved.has_password ? "Password set." : "No password stored.");
      reload();
    } else if (removing) {
      if (!(await remove(removing.dataset.remove))) return;
      toast(`Removed enclosure ${removing.dataset.remove}`);
      reload();
    }
  });
  live.on("resync", reload);
  render();
}
