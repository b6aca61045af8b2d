// The modal dialog the row actions ask in (delete this? the new name?).
// A native <dialog> opened with showModal: focus stays inside, Esc closes it,
// the rest of the page is inert meanwhile; no focus trap of our own to get wrong.

import { h, replace, uid } from "./dom.js";

/**
 * Open a modal <dialog> and return it. body: nodes between the heading and the buttons;
 * confirm: {label, class}, the submit button; dismiss: the label of the button that closes it.
 * onConfirm may throw an ApiError: its message and code are shown in the dialog, which stays
 * (and `initialFocus`, the field it is about, is marked invalid and focused); else the dialog closes.
 * Focus starts on initialFocus, else the dismiss button if focusDismiss (a destructive question),
 * else the confirm button. onClose(el) runs after the dialog closed and left the page, however.
 */
export function openDialog({ title, body, confirm, dismiss, onConfirm, initialFocus, focusDismiss, onClose }) {
  const headingId = uid("dialog");
  const errorId = uid("dialog-error");
  const error = h("div", { id: errorId, class: "dl-dialog-error", role: "alert" });
  if (initialFocus) initialFocus.setAttribute("aria-describedby", errorId);
  const confirmButton = h("button", { type: "submit", class: confirm.class }, confirm.label);
  const dismissButton = h("button", { type: "button", onclick: () => el.close() }, dismiss);
  const form = h("form", { class: "dl-dialog-form" },
    h("h2", { id: headingId }, title),
    ...body,
    error,
    h("div", { class: "dl-dialog-buttons" }, confirmButton, dismissButton));
  const el = h("dialog", { class: "dl-dialog", "aria-labelledby": headingId }, form);
  let busy = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    confirmButton.setAttribute("aria-disabled", "true");
    replace(error);
    if (initialFocus) initialFocus.removeAttribute("aria-invalid");
    try {
      await onConfirm();
      el.close();
    } catch (err) {
      // the API's message says every detail in words already; the code is for a support request
      replace(error, h("p", {}, err.message || String(err), " ", h("code", {}, `(${err.code || "error"})`)));
      if (initialFocus) {
        initialFocus.setAttribute("aria-invalid", "true");
        initialFocus.focus();
      }
    } finally {
      busy = false;
      confirmButton.removeAttribute("aria-disabled");
    }
  });
  el.addEventListener("close", () => {
    el.remove();
    onClose(el);
  });
  document.body.append(el);
  el.showModal();
  (initialFocus || (focusDismiss ? dismissButton : confirmButton)).focus();
  return el;
}
