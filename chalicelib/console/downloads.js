// The downloads list: filters, the table, live progress, row actions, and
// word when an export of the person's own finishes.
//
// mountDownloads wires the parts together; each part is a module of its own:
//   downloads-model.js      what the list knows, and the rules for changing it (no DOM)
//   downloads-table.js      drawing the table (cards when narrow), the summary, Load more
//   downloads-filters.js    the filters bar
//   downloads-poller.js     when to poll (backoff, hidden tab) and what one poll asks
//   downloads-actions.js    download, cancel, retry, rename, delete, copy; their dialogs
//   downloads-dialog.js     the modal dialog those ask in
//   downloads-announcer.js  toasts, the title's count and system notifications on a finish
//   downloads-focus.js      focus that survives redraws
// What stays here is what touches several of them at once: loading a page, taking
// an answer into the model and the row, and the life cycle.

import { createRowActions } from "./downloads-actions.js";
import { createAnnouncer } from "./downloads-announcer.js";
import { createFilters } from "./downloads-filters.js";
import {
  acceptAnswer, addFresh, createModel, dropTask, failLoad, hasActive, listQuery, mergePage, sameTask,
} from "./downloads-model.js";
import { createPoller, pollActive } from "./downloads-poller.js";
import { createTable } from "./downloads-table.js";
import { onLangChange } from "./i18n.js";

/**
 * Draw the signed-in person's downloads into `container` and keep them current.
 * ctx: {api, session, config, toasts, user, base}. Returns a controller:
 * {stop(), refresh(), add(task)}: stop() ends polling and listeners (on sign-out),
 * refresh() reloads the first page, add(task) shows a task just created and follows it.
 */
export function mountDownloads(container, ctx) {
  const user = ctx.user;
  const model = createModel();
  let stopped = false;
  const isStopped = () => stopped;

  // the parts call one another through arrows: each is made before any of them runs
  const poller = createPoller({ hasWork: () => hasActive(model), poll, onShown: () => announcer.seen() });
  const actions = createRowActions({
    ctx, model, container, isStopped, apply, removeTask,
    renderRow: (id) => table.renderRow(id),
    findRow: (id) => table.findRow(id),
    kick: poller.kick,
  });
  const announcer = createAnnouncer({ toasts: ctx.toasts, username: user.username, download: actions.download, isStopped });
  const filters = createFilters({ container, model, user, findRow: (id) => table.findRow(id), load });
  const table = createTable({ container, model, user, actions, filters, load, isStopped });

  /** Load the first page the filters ask for, or (more) the next one; the latest asked wins. */
  async function load({ more = false } = {}) {
    // a cursor belongs to the page it came with: none to follow while a first page is on its way
    if (more && (model.loading || !model.nextCursor)) return;
    const seq = ++model.loadSeq;
    const sent = performance.now();
    const query = listQuery(model, user);
    if (more) {
      query.cursor = model.nextCursor;
      model.loadingMore = true;
    } else {
      model.loading = true;
    }
    model.loadError = null;
    table.renderMeta();
    table.renderMore();
    try {
      const page = await ctx.api.list(query);
      if (stopped || seq !== model.loadSeq) return;
      for (const [prev, task] of mergePage(model, page, { seq, sent, more })) announcer.notice(prev, task);
    } catch (err) {
      if (stopped || seq !== model.loadSeq) return;
      failLoad(model, err, more);
    } finally {
      if (!stopped && seq === model.loadSeq) {
        model.loading = false;
        model.loadingMore = false;
      }
    }
    if (stopped || seq !== model.loadSeq) return;
    table.renderBody();
    table.renderMeta();
    table.renderMore();
    poller.kick();
  }

  /**
   * A newer state of a shown task (from a request sent at `sent`): the model, the row, and word
   * if it just finished. Returns whether its status changed.
   */
  function apply(task, sent) {
    const prev = acceptAnswer(model, task, sent);
    if (!prev) return false;
    announcer.notice(prev, task);
    if (!sameTask(prev, task)) table.renderRow(task.id);
    return prev.status !== task.status;
  }

  function removeTask(id) {
    dropTask(model, id);
    table.renderBody();
    table.renderMeta();
  }

  /** One poll; its failure pauses nothing but is said in the summary until a poll goes through. */
  async function poll() {
    const { changed, error } = await pollActive({ api: ctx.api, model, toasts: ctx.toasts, apply, removeTask, isStopped });
    if (stopped) return changed;
    if (error) {
      model.pollError = error;
      table.renderMeta();
    } else if (model.pollError) {
      model.pollError = null;
      table.renderMeta();
    }
    return changed;
  }

  function render() {
    announcer.updateTitle();
    table.render();
  }

  // ---- life cycle -------------------------------------------------------------

  const onInteract = () => announcer.seen();
  const offLang = onLangChange(() => { if (!stopped) render(); });
  window.addEventListener("focus", onInteract);
  document.addEventListener("pointerdown", onInteract, true);
  document.addEventListener("keydown", onInteract, true);

  render();
  load();
  ctx.api.kinds().then((answer) => {
    if (stopped) return;
    model.kinds = (answer.items || []).map((k) => k.kind);
    const select = container.querySelector("[data-key=f-kind]");
    if (select && model.kinds.length) filters.redraw();
  }, () => { /* the kind filter offers the kinds in the list */ });

  return {
    stop() {
      stopped = true;
      poller.stop();
      filters.stop();
      offLang();
      window.removeEventListener("focus", onInteract);
      document.removeEventListener("pointerdown", onInteract, true);
      document.removeEventListener("keydown", onInteract, true);
      actions.closeDialog();
      announcer.reset();
    },
    refresh() {
      return load();
    },
    add(task) {
      if (stopped || !task || !task.id) return;
      addFresh(model, task, performance.now());
      table.renderBody();
      table.renderMeta();
      const tr = table.findRow(task.id);
      if (tr) tr.scrollIntoView({ block: "nearest" });
      poller.kick();
    },
  };
}
