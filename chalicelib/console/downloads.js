// The downloads list: filters, the table, live progress, row actions.
// (Placeholder until the list lands: app.js mounts it here.)

import { h, replace } from "./dom.js";

/**
 * Draw the signed-in person's downloads into `container` and keep them current.
 * ctx: {api, session, config, toasts, user, base}. Returns a controller:
 * {stop(), refresh(), add(task)}: stop() ends polling (on sign-out), refresh()
 * reloads the first page, add(task) shows a task just created and follows it.
 */
export function mountDownloads(container, ctx) {
  replace(container, h("div", { role: "table", "aria-label": "Downloads" }));
  return { stop() {}, refresh() {}, add() {} };
}
