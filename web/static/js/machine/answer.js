// The answer-file preview: what this machine's distribution installer would be served in
// Simple mode for a template and install options (POST /api/simple/answers/{slug}/preview).

import { api } from "../api.js";
import { $ } from "../dom.js";

export function initAnswerPreview(ctx) {
  const form = $("#answer-form");
  if (!form) return;
  const error = $("#answer-error");
  const out = $("#answer-preview");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    let options;
    try {
      options = JSON.parse(form.elements.options.value || "{}");
    } catch (err) {
      error.textContent = `Install options are not JSON: ${err.message}`;
      error.hidden = false;
      return;
    }
    const slug = form.elements.template.value;
    try {
      const answer = await api("POST", `/api/simple/answers/${encodeURIComponent(slug)}/preview`,
        { machine_id: ctx.id, options }, { quiet: true });
      out.textContent = answer.text;
      out.hidden = false;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      out.hidden = true;
    }
  });
}
