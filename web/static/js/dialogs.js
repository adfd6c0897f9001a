// Dialogs: the native <dialog> opened from [data-open] buttons, dialogs built on demand
// (modal), and the [data-copy] buttons inside them.

import { $, h, icon, setText } from "./dom.js";
import { detailText, showError } from "./toast.js";

/** Native <dialog>: Escape and focus containment come free; we add backdrop clicks and focus return. */
export function showDialog(dialog, opener) {
  dialog._opener = opener || document.activeElement;
  if (!dialog._wired) {
    dialog._wired = true;
    dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
    dialog.addEventListener("close", () => dialog._opener?.focus?.());
  }
  dialog.showModal();
}

export function initDialogs() {
  document.addEventListener("click", (e) => {
    const opener = e.target.closest("[data-open]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.open);
      if (!dialog) return;
      const current = opener.closest("dialog");
      const returnTo = current?._opener || opener;
      if (current) { current._opener = null; current.close(); }
      showDialog(dialog, returnTo);
      return;
    }
    const closer = e.target.closest("[data-close]");
    if (closer) closer.closest("dialog")?.close();
    const copier = e.target.closest("[data-copy]");
    if (copier) copyFrom(copier);
  });
}

/**
 * A dialog built on demand: a title, a body, and a confirm button that runs `onConfirm`.
 * `requireText` makes the operator type it (the machine's name) before confirming; `requireHint`
 * says what it costs.
 * Errors from onConfirm go inline when `inlineErrors`, else the dialog closes and a toast says why.
 */
export function modal({ title, iconName = "info", body = [], confirmLabel = "Confirm", danger = false,
                 requireText = "", requireHint = "This cannot be undone.", inlineErrors = false, onConfirm }) {
  const id = `modal-${Math.random().toString(36).slice(2, 8)}`;
  const error = h("p", { class: "field-error", role: "alert", hidden: true });
  const typed = requireText ? h("input", { id: `${id}-type`, autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-hint` }) : null;
  const confirm = h("button", { type: "submit", class: `btn ${danger ? "btn-danger-solid" : "btn-primary"}`, disabled: !!requireText }, confirmLabel);
  const form = h("form", { class: "dialog-card", novalidate: true },
    h("header", { class: "dialog-head" },
      h("h2", { id: `${id}-title` }, icon(iconName), title),
      h("button", { type: "button", class: "icon-btn", "aria-label": "Close", "data-close": "" }, icon("x"))),
    h("div", { class: "dialog-body" }, body,
      typed ? h("div", { class: "field" },
        h("label", { for: typed.id }, "Type ", h("span", { class: "confirm-name" }, requireText), " to confirm"),
        typed, h("p", { class: "help", id: `${id}-hint` }, requireHint)) : null,
      error),
    h("footer", { class: "dialog-foot" },
      h("button", { type: "button", class: "btn btn-ghost", "data-close": "" }, "Cancel"), confirm));
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": `${id}-title` }, form);
  typed?.addEventListener("input", () => { confirm.disabled = typed.value.trim() !== requireText; });
  return new Promise((resolve) => {
    let result = null;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (typed && typed.value.trim() !== requireText) { typed.focus(); return; }
      confirm.disabled = true;
      confirm.setAttribute("aria-busy", "true");
      try {
        result = await onConfirm(form);
        dialog.close();
      } catch (err) {
        if (inlineErrors) {
          error.textContent = err.detail ? `${err.message} (${detailText(err.detail)})` : err.message;
          error.hidden = false;
          confirm.disabled = false;
        } else {
          dialog.close();
          showError(err);
        }
      } finally {
        confirm.removeAttribute("aria-busy");
      }
    });
    dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
    document.body.append(dialog);
    showDialog(dialog, document.activeElement);
    (typed || form.querySelector("input, select") || confirm).focus();
  });
}

async function copyText(text, near) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall through */ }
  }
  // Plain-HTTP panels have no async clipboard: copy through a selected textarea. It goes next to
  // the button so it is inside an open modal dialog (everything outside one is inert).
  const area = h("textarea", { readonly: true, style: "position:fixed;top:0;left:0;opacity:0" });
  area.value = text;
  near.after(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  area.remove();
  near.focus();
  return ok;
}

async function copyFrom(button) {
  const source = $(button.dataset.copy);
  if (!source) return;
  const ok = await copyText(source.textContent.trim(), button);
  const label = button.querySelector("span");
  if (label) {
    setText(label, ok ? "Copied" : "Press Ctrl+C");
    if (!ok) window.getSelection()?.selectAllChildren(source);
    setTimeout(() => setText(label, "Copy"), 1800);
  }
}
