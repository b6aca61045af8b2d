// Focus survives redraws. The list redraws rows while they change, every
// second or so, and whole parts on a new language or new filters; a keyboard
// or screen reader user in a row or the filters must not be thrown back to
// the top of the page each time. What had focus is named by what it is (the
// same action of the same row, the same filter control), not by the element,
// which a redraw replaces.

/** What has focus inside `container` now, by name; null when focus is elsewhere. */
export function captureFocus(container) {
  const el = document.activeElement;
  if (!el || !container.contains(el) || el === document.body) return null;
  const tr = el.closest("tr[data-id]");
  return { id: tr ? tr.dataset.id : null, action: el.dataset.action || null, key: el.dataset.key || null, el };
}

/**
 * Focus again what `focus` (from captureFocus) named, after a redraw: the control of the same
 * data-key, or the same action of the same row (its first button if that action is gone), or the
 * table. findRow(id) finds a row by task ID.
 */
export function restoreFocus(container, focus, findRow) {
  if (!focus || (focus.el.isConnected && document.activeElement === focus.el)) return;
  let target = null;
  if (focus.key) target = container.querySelector(`[data-key="${focus.key}"]`);
  else if (focus.id) {
    const tr = findRow(focus.id);
    if (tr) target = (focus.action && tr.querySelector(`[data-action="${focus.action}"]`)) || tr.querySelector("button");
  }
  if (!target) target = container.querySelector(".dl-table");
  if (target) target.focus();
}
