// Keeping the shown tasks current: when to ask, and what.
//
// Polling (only while a shown task is queued, running or canceling; never
// while the tab is hidden): one GET /downloads?status=queued,running,canceling
// with created_after = the oldest active task's creation time answers for
// every active task at once, whatever their number; a shown task missing from
// it has left the active states, and one GET /downloads/{id} each says how it
// ended (or 404: deleted elsewhere). A tick thus costs one request plus one
// per task that just finished, where a GET per active task would cost one per
// task every tick, and re-listing the shown page would miss tasks further down
// (Load more) and change under the cursor. The interval starts at 1 s, grows
// by half each quiet tick up to 10 s, and starts over when the person acts
// (add, cancel, retry, refresh, filters, the tab shown again) or a shown task
// changes status. A hidden tab asks nothing, unless the person allowed system
// notifications: then it goes on (same backoff), since telling a person who
// looks elsewhere is what a notification is for.

import { notificationsAllowed } from "./downloads-announcer.js";
import { ACTIVE_QUERY, activeTasks, oldestCreated, overtaken } from "./downloads-model.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  en: { "error.gone": "“{name}” is gone (deleted elsewhere)." },
  zh: { "error.gone": "“{name}”已不存在（已在别处删除）。" },
});

const POLL_FIRST_MS = 1000;
const POLL_MAX_MS = 10_000;
const POLL_GROWTH = 1.5;

/** Whether polling may run now: a hidden tab only polls to send a notification. */
export function awake() {
  return !document.hidden || notificationsAllowed();
}

/**
 * The timing of the polls: {kick(), stop()}. hasWork() says whether anything shown is active;
 * poll() asks once and resolves to whether a shown task changed status (it handles its own errors);
 * onShown() runs when the tab is shown again. kick() polls soon: the person did something, so
 * the next change is likely near. stop() ends it for good.
 */
export function createPoller({ hasWork, poll, onShown }) {
  let stopped = false;
  let timer = null;
  let polling = false;
  let kicked = false;
  let delay = POLL_FIRST_MS;

  function schedule() {
    if (stopped || timer || polling || !awake() || !hasWork()) return;
    timer = setTimeout(tick, delay);
  }

  function kick() {
    delay = POLL_FIRST_MS;
    kicked = true;
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    schedule();
  }

  async function tick() {
    timer = null;
    if (stopped || !awake() || !hasWork()) return;
    polling = true;
    kicked = false;
    let changed = false;
    try {
      changed = await poll();
    } finally {
      polling = false;
    }
    if (stopped) return;
    delay = changed || kicked ? POLL_FIRST_MS : Math.min(Math.round(delay * POLL_GROWTH), POLL_MAX_MS);
    kicked = false;
    schedule();
  }

  function onVisibility() {
    if (document.hidden) {
      if (!awake() && timer) {
        clearTimeout(timer);
        timer = null;
      }
      return;
    }
    onShown();
    kick(); // back: catch up at once
  }

  document.addEventListener("visibilitychange", onVisibility);

  return {
    kick,
    stop() {
      stopped = true;
      clearTimeout(timer);
      timer = null;
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}

/**
 * Ask once how the shown active tasks are (see the top of this module). hooks: {api, model,
 * toasts, apply(task, sent) -> whether its status changed, removeTask(id), isStopped()}.
 * Resolves to {changed, error}: error is what stopped this poll (null when it went through);
 * changed says whether a shown task changed status before that. Not called without active tasks.
 */
export async function pollActive({ api, model, toasts, apply, removeTask, isStopped }) {
  const active = activeTasks(model);
  const sent = performance.now();
  let changed = false;
  try {
    const page = await api.list({ status: ACTIVE_QUERY, created_after: oldestCreated(active), limit: 100 });
    if (isStopped()) return { changed, error: null };
    const now = new Map(page.items.map((task) => [task.id, task]));
    const gone = [];
    for (const task of active) {
      if (now.has(task.id)) changed = apply(now.get(task.id), sent) || changed;
      else if (!overtaken(model, task.id, sent) && awake()) gone.push(task.id); // hidden meanwhile: later
    }
    const ended = await Promise.all(gone.map((id) => api.get(id).catch((err) => err)));
    if (isStopped()) return { changed, error: null };
    ended.forEach((result, i) => {
      const id = gone[i];
      if (overtaken(model, id, sent) || !model.tasks.has(id)) return;
      if (result && result.id) changed = apply(result, sent) || changed;
      else if (result && result.status === 404) {
        const task = model.tasks.get(id);
        removeTask(id);
        toasts.show({ text: t("error.gone", { name: task.task_name }) });
      } else throw result;
    });
    return { changed, error: null };
  } catch (err) {
    return { changed, error: err };
  }
}
