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
  // a row's details (a parts task's files) are a row of their own, named after the task's
  const tr = el.closest("tr[data-id], tr[data-details-for]");
  const id = tr ? tr.dataset.id || tr.dataset.detailsFor : null;
  return { id, action: el.dataset.action || null, key: el.dataset.key || null, el };
}

/**
 * Focus again what `focus` (from captureFocus) named, after a redraw: the control of the same
 * data-key, or the same action of the same row or its details (its first button if that action
 * is gone), or the table. findRow(id) finds a row by task ID.
 */
export function restoreFocus(container, focus, findRow) {
  if (!focus || (focus.el.isConnected && document.activeElement === focus.el)) return;
  let target = null;
  if (focus.key) target = container.querySelector(`[data-key="${focus.key}"]`);
  else if (focus.id) {
    const tr = findRow(focus.id);
    if (tr) {
      const details = tr.nextElementSibling && tr.nextElementSibling.dataset.detailsFor === focus.id
        ? tr.nextElementSibling : null;
      const named = (row) => row && focus.action && row.querySelector(`[data-action="${focus.action}"]`);
      target = named(tr) || named(details) || tr.querySelector("button");
    }
  }
  if (!target) target = container.querySelector(".dl-table");
  if (target) target.focus();
}
