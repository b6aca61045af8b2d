// Short messages in a corner: "ready", "failed", errors of an action.

import { h } from "./dom.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  en: { "toast.close": "Close" },
  zh: { "toast.close": "关闭" },
});

const DEFAULT_MS = 8000;

/**
 * mountToasts(region) -> {show({text, kind, action: {label, run}, timeout})}.
 * kind is "info", "success" or "error"; an action is a button in the toast.
 * The region is an aria-live status region, so screen readers read each toast.
 * A timeout of 0 keeps the toast until it is closed. A toast the pointer or the
 * keyboard is in stays while it is there (WCAG 2.2.1: time to read and act).
 */
export function mountToasts(region) {
  function show({ text, kind = "info", action = null, timeout = DEFAULT_MS }) {
    let timer = null;
    const close = () => { clearTimeout(timer); toast.remove(); };
    const arm = () => { clearTimeout(timer); if (timeout) timer = setTimeout(close, timeout); };
    const toast = h("div", { class: `toast ${kind}` },
      h("span", { class: "text" }, text),
      action ? h("button", { type: "button", onclick: () => { action.run(); close(); } }, action.label) : null,
      h("button", { type: "button", class: "close", "aria-label": t("toast.close"), onclick: close }, "×"));
    toast.addEventListener("pointerenter", () => clearTimeout(timer));
    toast.addEventListener("pointerleave", arm);
    toast.addEventListener("focusin", () => clearTimeout(timer));
    toast.addEventListener("focusout", (event) => { if (!toast.contains(event.relatedTarget)) arm(); });
    region.append(toast);
    arm();
    return { close };
  }
  return { show };
}
