// What the downloads list knows, and the rules for changing it. No DOM, no
// timers, no requests: the list, the poller and the row actions all change the
// same model, so the rules that keep it right (which answer is newer, which
// finish is news) live here once, where they can be read without the page.

export const STATUSES = ["queued", "running", "canceling", "succeeded", "failed", "canceled", "expired"];
export const ACTIVE = new Set(["queued", "running", "canceling"]);
export const ACTIVE_QUERY = "queued,running,canceling";
export const PAGE_SIZE = 20;
export const EMPTY_FILTERS = { status: "", kind: "", name: "", from: "", to: "", owner: "", tenant: "" };

/** A model with nothing in it yet (the first page is on its way). */
export function createModel() {
  return {
    tasks: new Map(), // id -> task, as the API last said
    order: [], // ids, newest first (ULIDs sort by creation time)
    fresh: new Map(), // id -> loadSeq when add() showed it: shown whatever the filters
    pending: new Set(), // ids with an action under way
    expanded: new Set(), // ids whose details (a parts task's files) are shown
    // id -> when the request behind the task's shown state was sent: an answer to a request sent
    // earlier (a poll overtaken by a cancel or a reload) is older news and is dropped
    sentAt: new Map(),
    loadSeq: 0, // the latest listing asked for: the answer of an earlier one is dropped
    nextCursor: null,
    loading: true,
    loadingMore: false,
    loadError: null,
    pollError: null,
    filters: { ...EMPTY_FILTERS },
    kinds: [],
  };
}

/** Admins and tenant admins see other people's tasks: the owner column and filter. */
export function seesOthers(user) {
  return Boolean(user.isAdmin || user.isTenantAdmin);
}

/** Insert or replace a task, keeping the newest-first order. */
export function putTask(model, task) {
  if (!model.tasks.has(task.id)) {
    model.order.push(task.id);
    model.order.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
  }
  model.tasks.set(task.id, task);
}

/** Forget a task (deleted, here or elsewhere). */
export function dropTask(model, id) {
  model.tasks.delete(id);
  model.fresh.delete(id);
  model.expanded.delete(id);
  model.order = model.order.filter((x) => x !== id);
  model.sentAt.delete(id);
}

/**
 * Show a task just created here: shown whatever the filters say until a listing asked for after it
 * answers, and newer than any answer to a request sent before now.
 */
export function addFresh(model, task, now) {
  putTask(model, task);
  model.sentAt.set(task.id, now);
  model.fresh.set(task.id, model.loadSeq);
}

/** Whether an answer to a request sent at `sent` is older than what the model shows of the task. */
export function overtaken(model, id, sent) {
  return (model.sentAt.get(id) || 0) > sent;
}

/**
 * Take a newer state of a shown task (from a request sent at `sent`). Returns the state it
 * replaced, or null when the task is not shown or the answer is older news (the model is unchanged).
 */
export function acceptAnswer(model, task, sent) {
  const prev = model.tasks.get(task.id);
  if (!prev || overtaken(model, task.id, sent)) return null;
  model.sentAt.set(task.id, sent);
  model.tasks.set(task.id, task);
  return prev;
}

/**
 * Merge a listing's page (asked for as listing `seq`, sent at `sent`) into the model. A first page
 * replaces the rows, keeping the tasks add() showed while it was on its way; a further page (`more`)
 * adds to them. Returns the [before, after] pairs of tasks that were shown and are in the page, in
 * page order, for the caller to tell finishes from.
 */
export function mergePage(model, page, { seq, sent, more }) {
  const before = model.tasks;
  let kept = [];
  if (!more) {
    // a task add() showed while this listing was on its way may not be in it yet: it stays
    kept = [...model.fresh].filter(([, since]) => since >= seq).map(([id]) => before.get(id)).filter(Boolean);
    model.tasks = new Map();
    model.order = [];
    model.fresh = new Map(kept.map((task) => [task.id, seq]));
  }
  for (const task of kept) putTask(model, task);
  const changes = [];
  for (const task of page.items) {
    const prev = before.get(task.id);
    if (prev && overtaken(model, task.id, sent)) {
      putTask(model, prev); // what the page has is newer than this listing
      continue;
    }
    model.sentAt.set(task.id, sent);
    if (prev) changes.push([prev, task]);
    putTask(model, task);
  }
  model.nextCursor = page.next_cursor || null;
  return changes;
}

/** A listing failed: a first page's rows of the last filters under new ones would mislead. */
export function failLoad(model, err, more) {
  model.loadError = err;
  if (!more) {
    model.tasks = new Map();
    model.order = [];
    model.nextCursor = null;
  }
}

/** The shown tasks that are queued, running or canceling, newest first. */
export function activeTasks(model) {
  return model.order.map((id) => model.tasks.get(id)).filter((task) => ACTIVE.has(task.status));
}

export function hasActive(model) {
  return model.order.some((id) => ACTIVE.has(model.tasks.get(id).status));
}

/** The earliest creation time of `tasks` (not empty): one listing after it covers them all. */
export function oldestCreated(tasks) {
  return tasks.reduce((min, task) => (task.created_at < min ? task.created_at : min), tasks[0].created_at);
}

/**
 * Whether `prev` -> `task` is a finish to tell `username` of, and under which key: a task of
 * theirs that was active and succeeded or failed. The key names the attempt, so a retry that
 * finishes again is news again while answers that repeat a finish are not. Null: nothing to tell.
 */
export function finishKey(prev, task, username) {
  if (!ACTIVE.has(prev.status) || (task.status !== "succeeded" && task.status !== "failed")) return null;
  if (task.owner_name !== username) return null; // an admin is told of its own exports only
  return `${task.id}#${task.attempts}`;
}

/** Whether two states of a task look the same in a row (the download URL is not shown). */
export function sameTask(a, b) {
  const strip = ({ url, url_expires_at: urlExpires, ...rest }) => rest;
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

// ---- filters ----------------------------------------------------------------

/** The query of the first page the filters ask for. */
export function listQuery(model, user) {
  const f = model.filters;
  const query = { limit: PAGE_SIZE };
  if (f.status) query.status = f.status === "active" ? ACTIVE_QUERY : f.status;
  if (f.kind) query.kind = f.kind;
  if (f.name.trim()) query.task_name = f.name.trim();
  if (f.from) query.created_after = localDay(f.from, false).toISOString();
  if (f.to) query.created_before = localDay(f.to, true).toISOString();
  if (seesOthers(user) && f.owner.trim()) query.owner = ownerId(model, f.owner.trim());
  if (user.isAdmin && f.tenant.trim()) query.tenant = f.tenant.trim();
  return query;
}

/** A person picks an owner by name; the API filters by user ID (sub). */
export function ownerId(model, value) {
  for (const task of model.tasks.values()) if (task.owner_name === value) return task.owner;
  return value;
}

/** Whether any filter is set (an empty list then says none match, not none made). */
export function isFiltered(filters) {
  const f = filters;
  return Boolean(f.status || f.kind || f.name.trim() || f.from || f.to || f.owner.trim() || f.tenant.trim());
}

/** The kinds the kind filter offers: those the API named, those shown, and the one picked. */
export function kindsOffered(model) {
  return [...new Set([...model.kinds, ...[...model.tasks.values()].map((task) => task.kind), model.filters.kind]
    .filter(Boolean))].sort();
}

/** The owners the owner filter suggests, by name: the owners of the shown tasks. */
export function ownersOffered(model) {
  return [...new Set([...model.tasks.values()].map((task) => task.owner_name))].sort();
}

/** The first or last millisecond of a calendar day in the browser's time zone. */
export function localDay(value, end) {
  const [y, m, d] = value.split("-").map(Number);
  return end ? new Date(y, m - 1, d, 23, 59, 59, 999) : new Date(y, m - 1, d, 0, 0, 0, 0);
}
