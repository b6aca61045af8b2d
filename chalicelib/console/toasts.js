// Short messages in a corner: "ready", "failed", errors of an action.

import { h } from "./dom.js";

const DEFAULT_MS = 8000;

/**
 * mountToasts(region) -> {show({text, kind, action: {label, run}, timeout})}.
 * kind is "info", "success" or "error"; an action is a button in the toast.
 * The region is an aria-live status region, so screen readers read each toast.
 */
export function mountToasts(region) {
  function show({ text, kind = "info", action = null, timeout = DEFAULT_MS }) {
    const close = () => toast.remove();
    const toast = h("div", { class: `toast ${kind}` },
      h("span", { class: "text" }, text),
      action ? h("button", { type: "button", onclick: () => { action.run(); close(); } }, action.label) : null,
      h("button", { type: "button", class: "close", "aria-label": "Close", onclick: close }, "×"));
    region.append(toast);
    if (timeout) setTimeout(close, timeout);
    return { close };
  }
  return { show };
}
