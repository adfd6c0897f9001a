// The Deploy / Reimage dialog: OS template, target disk, hostname, SSH keys, a user-data
// override, and a preview of the cloud-init seed the machine will get.

import { api } from "../api.js";
import { APP } from "../data.js";
import { modal } from "../dialogs.js";
import { h } from "../dom.js";
import { fmt } from "../fmt.js";
import { showError } from "../toast.js";

let templates = null;

const field = (id, label, control, help = "") => h("div", { class: "field" },
  h("label", { for: id }, label), control, help ? h("p", { class: "help" }, help) : null);

const templateSelect = (machine) => {
  const select = h("select", { id: "deploy-template", name: "template", required: true },
    templates.map((t) => h("option", { value: t.slug },
      t.image_bytes ? `${t.name} · ${fmt.bytes(t.image_bytes)}` : t.name)));
  if (machine.os && templates.some((t) => t.slug === machine.os)) select.value = machine.os;
  return select;
};

const diskSelect = (machine) => h("select", { id: "deploy-disk", name: "disk" },
  h("option", { value: "" }, "Automatic: the smallest non-removable disk that fits"),
  (machine.disks || []).filter((d) => !d.removable).map((d) => h("option", {
    value: d.serial ? `serial:${d.serial}` : `/dev/${d.name}`,
  }, `/dev/${d.name} · ${fmt.bytes(d.size_bytes)}${d.model ? ` · ${d.model}` : ""}${d.serial ? ` · ${d.serial}` : ""}`)));

// How the OS is installed: the image (Dragonfly's agent writes it) or the distribution's own
// installer with a generated answer file (Simple mode); the server's mode is the default.
const methodSelect = () => {
  const select = h("select", { id: "deploy-method", name: "method" },
    h("option", { value: "image" }, "Image: Dragonfly's agent writes the OS image"),
    h("option", { value: "installer" }, "Distribution installer: preseed, autoinstall or kickstart (Simple mode)"));
  select.value = APP.mode === "simple" ? "installer" : "image";
  return select;
};

/** The options the form holds, as the API takes them. */
const optionsOf = (form) => {
  const keys = form.elements.ssh_keys.value.split("\n").map((k) => k.trim()).filter(Boolean);
  const method = form.elements.method.value;
  const disk = form.elements.disk.value;
  if (method === "installer") {
    // The installer takes a device path; user-data is the image's (cloud-init) only.
    const options = { method, hostname: form.elements.hostname.value.trim(), ssh_keys: keys };
    if (disk.startsWith("/dev/")) options.disk = disk;
    return options;
  }
  const options = { method, hostname: form.elements.hostname.value.trim(), ssh_keys: keys, disk };
  const userData = form.elements.user_data.value;
  if (userData.trim()) options.user_data = userData;
  return options;
};

/** Opens the dialog for `action` ("deploy" or "reimage"); resolves with the API's answer. */
export async function deployDialog(ctx, action, requireText, post) {
  if (!templates) templates = await api("GET", "/api/templates");
  const { machine } = ctx;
  const preview = h("div", { class: "seed-preview", hidden: true });
  const previewButton = h("button", { type: "button", class: "btn btn-ghost" }, "Preview the cloud-init seed");
  const body = [
    h("p", {}, action === "deploy"
      ? "Installs the chosen OS. Everything on the target disk is overwritten."
      : "Wipes the target disk and installs the chosen OS again. Its current OS and data are lost."),
    field("deploy-template", action === "deploy" ? "OS template" : "OS template to install", templateSelect(machine)),
    field("deploy-method", "Install with", methodSelect(),
      "The distribution installer needs its kernel and initrd in the image store (see the README's Simple mode)."),
    field("deploy-disk", "Target disk", diskSelect(machine)),
    field("deploy-hostname", "Hostname", h("input", { id: "deploy-hostname", name: "hostname", value: machine.name,
      maxlength: "63", autocomplete: "off", spellcheck: "false" })),
    field("deploy-keys", "SSH public keys", h("textarea", { id: "deploy-keys", name: "ssh_keys", rows: "3",
      placeholder: "ssh-ed25519 AAAA... one key per line", spellcheck: "false" }), "Logins use keys: no password is ever set."),
    field("deploy-user-data", "User-data override (optional)", h("textarea", { id: "deploy-user-data", name: "user_data",
      rows: "4", placeholder: "#cloud-config\npackages: [htop]", spellcheck: "false" }),
    "A jinja2 template over the machine's facts, merged into the template's cloud-config."),
    h("div", { class: "field" }, previewButton), preview,
  ];
  previewButton.addEventListener("click", async () => {
    const form = previewButton.closest("form");
    try {
      const files = await api("POST", `/api/templates/${encodeURIComponent(form.elements.template.value)}/preview`,
        { machine_id: ctx.id, options: optionsOf(form) });
      preview.replaceChildren(...Object.entries(files).filter(([, text]) => typeof text === "string").map(([name, text]) =>
        h("details", { open: name === "user-data" }, h("summary", { class: "mono" }, name), h("pre", { class: "mono" }, text))));
      preview.hidden = false;
    } catch (err) { showError(err, "Cannot preview the seed"); }
  });
  return modal({
    title: action === "deploy" ? `Deploy ${machine.name}` : `Reimage ${machine.name}`,
    iconName: APP.actions[action], danger: true, inlineErrors: true,
    confirmLabel: action === "deploy" ? "Deploy" : "Wipe and reimage", requireText, body,
    onConfirm: (form) => post(action, { template: form.elements.template.value, options: optionsOf(form) }),
  });
}
