// The machine page's tags editor and role form.

import { api } from "../api.js";
import { CAN } from "../data.js";
import { $, $$, h, icon, setText } from "../dom.js";
import { toast } from "../toast.js";

/** Wires the tags editor and the role form; returns renderTags(tags). */
export function initLabels(ctx) {
  const tagError = $("#tag-error");
  const tagInput = $("#tag-input");
  const machineUrl = `/api/machines/${encodeURIComponent(ctx.id)}`;

  const renderTags = (tags) => {
    const list = $("#tag-list");
    const have = $$("li", list).map((li) => li.dataset.tag);
    if (have.join("\n") === tags.join("\n")) return;
    list.replaceChildren(...tags.map((t) => h("li", { class: "chip tag", "data-tag": t },
      h("a", { href: `/machines?tag=${encodeURIComponent(t)}` }, t),
      CAN.write ? h("button", { type: "button", class: "chip-x", "aria-label": `Remove tag ${t}`, "data-remove-tag": t }, icon("x")) : null)));
  };
  const setTagError = (message) => {
    tagError.hidden = !message;
    setText(tagError, message || "");
    if (message) tagInput.setAttribute("aria-invalid", "true"); else tagInput.removeAttribute("aria-invalid");
  };
  const saveTags = async (tags) => {
    const m = await api("PUT", `${machineUrl}/tags`, { tags });
    ctx.machine = { ...ctx.machine, ...m };
    renderTags(m.tags);
    return m;
  };
  tagInput?.addEventListener("keydown", async (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const tag = tagInput.value;
    const { tags } = ctx.machine;
    if (!tag.trim()) { setTagError(""); return; }
    if (tags.includes(tag.trim())) { setTagError(`Already tagged “${tag.trim()}”`); return; }
    try {
      await saveTags([...tags, tag]);
      tagInput.value = "";
      setTagError("");
    } catch (err) {
      setTagError(err.detail && typeof err.detail === "object" && "length" in err.detail ? `${err.message} (this one has ${err.detail.length})` : err.message);
    }
  });
  tagInput?.addEventListener("input", () => { if (!tagError.hidden) setTagError(""); });
  $("#tag-list").addEventListener("click", async (e) => {
    const button = e.target.closest("[data-remove-tag]");
    if (!button) return;
    const tag = button.dataset.removeTag;
    try {
      await saveTags(ctx.machine.tags.filter((t) => t !== tag));
      setTagError("");
      tagInput?.focus();
    } catch (err) { setTagError(err.message); }
  });

  const roleError = $("#role-error");
  $("#role-form")?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#role-input");
    try {
      const m = await api("PATCH", machineUrl, { role: input.value });
      ctx.machine = { ...ctx.machine, ...m };
      roleError.hidden = true;
      input.removeAttribute("aria-invalid");
      toast(m.role ? `Role set to “${m.role}”` : "Role cleared");
    } catch (err) {
      roleError.hidden = false;
      setText(roleError, err.message);
      input.setAttribute("aria-invalid", "true");
    }
  });

  return renderTags;
}
