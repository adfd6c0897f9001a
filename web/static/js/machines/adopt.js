// The machine list's Adopt from BMC (admins): for a machine Dragonfly has never seen, a dialog
// with its BMC's driver and how to reach it (POST /api/power/adopt sets one-time PXE and powers
// it on, so it boots discovery), then the adoptions (GET /api/power/adoptions): waiting,
// linked with the machine that reported that BMC, or failed with the BMC's reason. Adoptions
// are not on the event stream: the list is asked again every few seconds while one waits. A
// failed adoption's error shows in the dialog verbatim.

import { ApiError, api } from "../api.js";
import { fieldsBody, markField, recordField, showFields } from "../bmc-fields.js";
import { when } from "../components.js";
import { APP } from "../data.js";
import { modal } from "../dialogs.js";
import { $, h, icon, setText } from "../dom.js";
import { live } from "../live.js";
import { showError, toast } from "../toast.js";

// An agent never reports these as its machine's BMC, so they cannot be adopted from.
const NOT_ADOPTABLE = new Set(["wol", "openjbod"]);
const FIELDS = ["address", "port", "user", "password", "insecure", "ca_pem"];
const POLL = 5000; // ms between readings while an adoption waits

const STATE_PILL = { waiting: "pill-accent", linked: "pill-ok", failed: "pill-danger" };

/** `nameOf(id)` names a machine the list knows ("" when it does not). */
export function initAdopt({ nameOf }) {
  const button = $("#adopt-bmc");
  const section = $("#adoptions");
  if (!button || !section) return;
  const list = $("#adoption-list", section);
  const names = new Map(); // machine id -> name, for linked adoptions the list has no row of
  let drivers = null;
  let timer = 0;

  const machineName = async (id) => {
    if (nameOf(id)) return;
    if (names.has(id)) return;
    try { names.set(id, (await api("GET", `/api/machines/${encodeURIComponent(id)}`)).name); } catch { names.set(id, id); }
  };

  const row = (a) => h("li", { class: `adoption adoption-${a.state}`, "data-adoption": a.id, "data-state": a.state },
    h("span", { class: `pill ${STATE_PILL[a.state] || ""}`, "data-field": "adoption-state" },
      a.state === "waiting" ? icon("spinner", "spin") : null, a.state),
    h("span", { class: "adoption-bmc" }, h("span", { class: "mono", "data-field": "adoption-address" }, a.address),
      h("span", { class: "faint small" }, ` ${a.driver}`)),
    a.state === "linked" && a.machine ? h("span", { class: "adoption-machine" }, icon("arrow-right"),
      h("a", { href: `/machines/${encodeURIComponent(a.machine)}`, "data-field": "adoption-machine" }, nameOf(a.machine) || names.get(a.machine) || a.machine)) : null,
    a.state === "waiting" ? h("span", { class: "adoption-note faint small" }, "Powered on into discovery: waiting for its agent to report this BMC.") : null,
    a.state === "failed" ? h("span", { class: "adoption-reason", "data-field": "adoption-reason" }, a.reason) : null,
    h("span", { class: "adoption-when faint small" }, when(a.updated)),
    h("button", { type: "button", class: "icon-btn", "data-remove-adoption": a.id, "aria-label": `Remove the adoption of ${a.address}`,
      title: "Forget this adoption (a BMC record it made for a machine stays)" }, icon("x")));

  const load = async () => {
    clearTimeout(timer);
    timer = 0;
    let items;
    try {
      items = await api("GET", "/api/power/adoptions");
    } catch (err) {
      if (err.status !== 0) showError(err, "Cannot load the adoptions");
      return;
    }
    await Promise.all(items.filter((a) => a.state === "linked" && a.machine).map((a) => machineName(a.machine)));
    list.replaceChildren(...items.map(row));
    section.hidden = items.length === 0;
    const waiting = items.filter((a) => a.state === "waiting").length;
    setText($('[data-field="adoptions-note"]', section), waiting ? `${waiting} waiting · checked every ${POLL / 1000} s` : "");
    if (waiting) timer = setTimeout(again, POLL);
  };
  // While the tab is hidden, the next reading waits until it is shown again.
  const again = () => {
    if (!document.hidden) { load(); return; }
    document.addEventListener("visibilitychange", load, { once: true });
  };

  const open = async () => {
    try {
      drivers ||= await api("GET", "/api/power/drivers");
    } catch (err) { showError(err, "Cannot load the power drivers"); return; }
    const choices = drivers.filter((d) => !NOT_ADOPTABLE.has(d.name));
    const initial = APP.demo && choices.some((d) => d.name === "fake") ? "fake"
      : choices.some((d) => d.name === "ipmi") ? "ipmi" : choices[0]?.name;
    const select = h("select", { id: "adopt-driver", name: "driver", "aria-describedby": "adopt-driver-help" },
      choices.map((d) => h("option", { value: d.name }, d.name)));
    select.value = initial;
    const driverHelp = h("p", { class: "help", id: "adopt-driver-help" });
    const boxes = FIELDS.map((f) => recordField("adopt", f));
    const show = () => {
      const form = select.form;
      showFields(form, select.value, FIELDS);
      const spec = drivers.find((d) => d.name === select.value);
      driverHelp.textContent = spec ? `${spec.summary}.` : "";
    };
    select.addEventListener("change", show);
    queueMicrotask(show); // once the dialog's form holds the boxes
    const made = await modal({
      title: "Adopt a machine from its BMC", iconName: "power", confirmLabel: "Power on into discovery", inlineErrors: true,
      body: [
        h("p", { class: "muted" }, "For a machine Dragonfly has never seen: its BMC is told to boot it from the network once and to power it on. It appears in the list when its discovery agent reports this BMC, which then becomes its BMC record."),
        h("div", { class: "field" }, h("label", { for: "adopt-driver" }, "Driver"), select, driverHelp),
        ...boxes],
      onConfirm: async (form) => {
        const driver = select.value;
        try {
          return await api("POST", "/api/power/adopt", { driver, ...fieldsBody(form, driver, FIELDS) });
        } catch (err) {
          if (err.detail?.adoption) load(); // a failed adoption is kept, with its reason
          markField(form, err);
          throw new ApiError(err.message, null, err.status); // verbatim, nothing added
        }
      },
    });
    if (!made) return;
    toast(`Adopting the machine behind ${made.address}`, "Its BMC boots it into discovery; it is linked when its agent reports this BMC.", "ok", "power");
    load();
  };

  button.addEventListener("click", () => { open(); });
  list.addEventListener("click", async (e) => {
    const remove = e.target.closest("[data-remove-adoption]");
    if (!remove) return;
    remove.disabled = true;
    try {
      await api("DELETE", `/api/power/adoptions/${encodeURIComponent(remove.dataset.removeAdoption)}`);
    } catch (err) { showError(err, "Cannot remove the adoption"); remove.disabled = false; return; }
    toast("Adoption removed", "A BMC record it made for a machine stays.");
    load();
  });
  live.on("resync", load);
  load();
}
