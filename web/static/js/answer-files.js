// Simple mode's answer files on the templates page: an admin edits the jinja2 template of an
// OS template's preseed, autoinstall or kickstart (an override of the built-in one), or goes
// back to the built-in (GET/PUT/DELETE /api/simple/answers/{slug}[/override]).

import { api } from "./api.js";
import { modal } from "./dialogs.js";
import { h } from "./dom.js";
import { showError, toast } from "./toast.js";

export const ANSWER_FAMILIES = ["debian", "ubuntu", "rhel"];

export async function editAnswerFile(slug) {
  let current;
  try {
    current = await api("GET", `/api/simple/answers/${encodeURIComponent(slug)}`);
  } catch (err) { showError(err, "Cannot load the answer file"); return; }
  const url = `/api/simple/answers/${encodeURIComponent(slug)}/override`;
  const text = h("textarea", { id: "answer-text", name: "text", rows: "22", spellcheck: "false", class: "mono answer-text" },
    current.override ? current.override.text : current.builtin);
  const reset = h("button", { type: "button", class: "btn btn-ghost", hidden: !current.override }, "Back to the built-in");
  reset.addEventListener("click", async () => {
    try {
      await api("DELETE", url);
    } catch (err) { showError(err, "Cannot remove the override"); return; }
    text.value = current.builtin;
    reset.hidden = true;
    toast(`${slug}: the built-in ${current.kind} is used again`);
  });
  const done = await modal({
    title: `${current.kind} for ${slug}`, iconName: "layers", confirmLabel: "Save override", inlineErrors: true,
    body: [
      h("p", { class: "muted" }, `The ${current.file} every Simple-mode install of ${slug} gets: a jinja2 template over the install options (${current.options.join(", ")}) and the machine. `,
        "Never a plaintext password: an answer file that would carry one is refused."),
      h("div", { class: "field" }, h("label", { for: "answer-text" }, current.override ? "Your override" : "Built-in (saving makes it your override)"), text),
      reset,
    ],
    onConfirm: (form) => api("PUT", url, { text: form.elements.text.value }),
  });
  if (done) toast(`Saved the ${current.kind} override of ${slug}`);
}
