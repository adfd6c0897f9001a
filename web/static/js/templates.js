// The templates page: OS templates (built-in, file, API) and the images in the image store.

import { ANSWER_FAMILIES, editAnswerFile } from "./answer-files.js";
import { api } from "./api.js";
import { CAN } from "./data.js";
import { modal } from "./dialogs.js";
import { $, h, icon } from "./dom.js";
import { fmt } from "./fmt.js";
import { live } from "./live.js";
import { showError, toast } from "./toast.js";

const FORMATS = ["qcow2", "raw", "raw.gz", "raw.xz", "raw.zst", "tar", "tar.gz", "tar.xz", "tar.zst"];

const checksumOf = (t) => t.checksum ? t.checksum.split(":")[0] : t.checksum_url ? t.checksum_url.split("/").pop() : "none";
const rootOf = (t) => [t.root_label && `label ${t.root_label}`, t.root_parttype && `type ${t.root_parttype.slice(0, 8)}…`,
  t.root_fstype && `largest ${t.root_fstype}`].filter(Boolean).join(", ") || "—";

const templateRow = (t) => h("tr", { "data-slug": t.slug },
  h("td", {}, h("div", { class: "strong" }, t.name), h("div", { class: "mono faint small" }, t.slug)),
  h("td", {}, h("div", { class: "mono small" }, t.format), h("div", { class: "faint small ellipsis", title: t.url || t.local_path }, t.url || t.local_path)),
  h("td", { class: "small" }, checksumOf(t)),
  h("td", { class: "small" }, rootOf(t)),
  h("td", { class: "small" }, t.source === "file" ? h("span", { title: t.source_path }, "file") : t.source),
  h("td", { class: "col-actions" },
    CAN.admin && ANSWER_FAMILIES.includes(t.family)
      ? h("button", { type: "button", class: "btn btn-sm btn-ghost", "data-answer": t.slug, "aria-label": `Answer file of ${t.slug}` },
        icon("layers"), h("span", { class: "btn-label" }, "Answer file")) : null,
    CAN.admin && !t.read_only
      ? h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-delete": t.slug, "aria-label": `Delete template ${t.slug}` },
        icon("trash"), h("span", { class: "btn-label" }, "Delete")) : null));

const imageRow = (i) => h("tr", { "data-digest": i.digest },
  h("td", {}, h("div", { class: "mono small", title: i.digest }, `${i.digest.slice(0, 16)}…`),
    h("div", { class: "faint small" }, (i.sources || []).join(", "))),
  h("td", { class: "mono small" }, `${i.format} → ${fmt.bytes(i.raw_size)} raw`),
  h("td", { class: "num" }, fmt.bytes(i.size)),
  h("td", { class: "small" }, (i.templates || []).join(", ") || h("span", { class: "faint" }, "unused")),
  h("td", { class: "small" }, i.last_used ? fmt.ago(i.last_used) : "—"),
  h("td", { class: "col-actions" }, CAN.admin
    ? h("button", { type: "button", class: "btn btn-sm btn-ghost danger-text", "data-remove": i.digest, "data-used": (i.templates || []).length ? "1" : "" },
      icon("trash"), h("span", { class: "btn-label" }, "Remove")) : null));

const field = (id, label, control, help = "") => h("div", { class: "field" },
  h("label", { for: id }, label), control, help ? h("p", { class: "help" }, help) : null);
const input = (name, attrs = {}) => h("input", { id: `tpl-${name}`, name, autocomplete: "off", spellcheck: "false", ...attrs });

/** The form of a new template, as the API takes it. */
const templateOf = (form) => {
  const v = (name) => form.elements[name].value.trim();
  const data = { slug: v("slug"), name: v("name"), family: v("family"), format: v("format"),
    root_label: v("root_label"), root_parttype: v("root_parttype"), root_fstype: v("root_fstype"),
    uefi_loader: v("uefi_loader"), default_user: v("default_user"), user_data: form.elements.user_data.value,
    ssh_keys: form.elements.ssh_keys.value.split("\n").map((k) => k.trim()).filter(Boolean) };
  const where = v("image");
  if (where.startsWith("/")) data.local_path = where; else data.url = where;
  const sum = v("checksum");
  if (sum.includes("://")) data.checksum_url = sum; else if (sum) data.checksum = sum;
  return data;
};

async function newTemplate(reload) {
  const done = await modal({
    title: "New OS template", iconName: "layers", confirmLabel: "Create", inlineErrors: true,
    body: [
      field("tpl-slug", "Slug", input("slug", { placeholder: "debian-12-web", required: true })),
      field("tpl-name", "Name", input("name", { placeholder: "Debian 12 for web servers", required: true })),
      field("tpl-family", "Family", h("select", { id: "tpl-family", name: "family" },
        ["debian", "ubuntu", "rhel", "fedora", "suse", "other"].map((f) => h("option", { value: f }, f)))),
      field("tpl-image", "Image URL or file on this server", input("image", { placeholder: "the vendor's URL, or /srv/images/disk.qcow2" })),
      field("tpl-format", "Format", h("select", { id: "tpl-format", name: "format" }, FORMATS.map((f) => h("option", { value: f }, f)))),
      field("tpl-checksum", "Checksum", input("checksum", { placeholder: "sha256:… or the vendor's SHA256SUMS URL" }),
        "The image is refused, never served, when it does not match."),
      field("tpl-root_label", "Root: partition or filesystem label", input("root_label", { placeholder: "root" })),
      field("tpl-root_parttype", "Root: GPT partition type", input("root_parttype", { placeholder: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" })),
      field("tpl-root_fstype", "Root: filesystem (the largest of it)", h("select", { id: "tpl-root_fstype", name: "root_fstype" },
        ["", "ext4", "xfs", "btrfs"].map((f) => h("option", { value: f }, f || "—")))),
      field("tpl-uefi_loader", "UEFI loader on the ESP", input("uefi_loader", { placeholder: "\\EFI\\debian\\shimx64.efi" })),
      field("tpl-default_user", "Default user", input("default_user", { placeholder: "debian" })),
      field("tpl-ssh_keys", "SSH public keys", h("textarea", { id: "tpl-ssh_keys", name: "ssh_keys", rows: "2", spellcheck: "false" })),
      field("tpl-user_data", "User-data (jinja2 over the machine's facts)", h("textarea", { id: "tpl-user_data", name: "user_data", rows: "4", spellcheck: "false", placeholder: "#cloud-config" })),
    ],
    onConfirm: (form) => api("POST", "/api/templates", templateOf(form)),
  });
  if (done) { toast(`Created ${done.slug}`, "It can be deployed now."); reload(); }
}

export function initTemplates() {
  const reload = async () => {
    try {
      const [templates, images] = await Promise.all([api("GET", "/api/templates"),
        CAN.admin || CAN.read ? api("GET", "/api/images").catch(() => []) : []]);
      $("#template-rows").replaceChildren(...templates.map(templateRow));
      $("#image-rows").replaceChildren(...images.map(imageRow));
      $("#images-table").hidden = images.length === 0;
      $("#images-empty").hidden = images.length > 0;
    } catch (err) { showError(err, "Cannot load templates"); }
  };

  $("#new-template")?.addEventListener("click", () => newTemplate(reload));
  $("#template-rows").addEventListener("click", async (e) => {
    const answer = e.target.closest("[data-answer]");
    if (answer) { editAnswerFile(answer.dataset.answer); return; }
    const button = e.target.closest("[data-delete]");
    if (!button) return;
    const slug = button.dataset.delete;
    const done = await modal({
      title: `Delete ${slug}`, iconName: "trash", danger: true, confirmLabel: "Delete template",
      body: [h("p", {}, "Machines deployed with it keep their OS; it can no longer be deployed.")],
      onConfirm: () => api("DELETE", `/api/templates/${encodeURIComponent(slug)}`),
    });
    if (done) { toast(`Deleted ${slug}`); reload(); }
  });
  $("#image-rows").addEventListener("click", async (e) => {
    const button = e.target.closest("[data-remove]");
    if (!button) return;
    const digest = button.dataset.remove;
    const used = Boolean(button.dataset.used);
    const done = await modal({
      title: "Remove this image", iconName: "trash", danger: true, confirmLabel: "Remove",
      body: [h("p", {}, used ? "Templates still use it: their next deployment fetches and verifies it again."
        : "No template uses it. Its disk space comes back.")],
      onConfirm: () => api("DELETE", `/api/images/${digest}${used ? "?force=1" : ""}`),
    });
    if (done) { toast("Image removed"); reload(); }
  });
  live.on("image", reload);
  live.on("resync", reload);
  reload();
}
