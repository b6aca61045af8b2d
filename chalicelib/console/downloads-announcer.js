// Word when an export of the person's own finishes: a toast (with Download
// when it is ready), a count in the tab's title until the person is back, and
// a system notification when they allowed it and look elsewhere. Each finish
// is told once per attempt (a retry that finishes again is news again),
// however many answers repeat it; the finishes one answer brings are told
// together, one toast for ten exports, not ten.

import { hasFiles } from "./downloads-files.js";
import { finishKey } from "./downloads-model.js";
import { addStrings, formatNumber, t } from "./i18n.js";

addStrings({
  en: {
    "done.ready": "“{name}” is ready.",
    "done.failed": "“{name}” failed: {reason}",
    "done.ready_many": "{count} exports are ready.",
    "done.failed_many": "{count} exports failed; their rows say why.",
    "notify.offer": "Notify me",
    "notify.offer_title": "Show a system notification when an export of yours finishes while this tab is in the background",
    "notify.ready": "Export ready",
    "notify.failed": "Export failed",
  },
  zh: {
    "done.ready": "“{name}”已就绪。",
    "done.failed": "“{name}”失败：{reason}",
    "done.ready_many": "{count} 个导出已就绪。",
    "done.failed_many": "{count} 个导出失败，原因见各行。",
    "notify.offer": "通知我",
    "notify.offer_title": "当此标签页在后台时，您的导出完成后显示系统通知",
    "notify.ready": "导出已就绪",
    "notify.failed": "导出失败",
  },
});

const NOTIFY_ASKED_KEY = "download-center.notify-asked";

/**
 * The announcer of one mounted list: {notice(prev, task), seen(), updateTitle(), reset()}.
 * notice() looks at each newer state of a shown task; seen() says the person is here (the count
 * in the title goes); reset() forgets the count and restores the title (on sign-out).
 * hooks: {toasts, username, download(id), isStopped()}.
 */
export function createAnnouncer({ toasts, username, download, isStopped }) {
  const told = new Set(); // finishKey()s told already
  const finished = []; // finishes not told yet (see tellFinished)
  let unseen = 0;

  function notice(prev, task) {
    const key = finishKey(prev, task, username);
    if (key === null || told.has(key)) return;
    told.add(key);
    unseen += 1;
    updateTitle();
    // the finishes one poll finds are told together: one toast for ten exports, not ten
    if (!finished.length) queueMicrotask(tellFinished);
    finished.push(task);
  }

  function tellFinished() {
    const batch = finished.splice(0);
    if (isStopped() || !batch.length) return;
    const ready = batch.filter((task) => task.status === "succeeded");
    const failed = batch.filter((task) => task.status === "failed");
    const reason = (task) => (task.error ? `${task.error.code}: ${task.error.message}` : t("status.failed"));
    if (ready.length === 1) {
      const [task] = ready;
      toasts.show({
        text: t("done.ready", { name: task.task_name }),
        kind: "success",
        // a task in parts has no one file: the action opens its row's list of files
        action: { label: t(hasFiles(task) ? "action.show_files" : "action.download"), run: () => download(task.id) },
        timeout: 20_000,
      });
    } else if (ready.length) {
      toasts.show({ text: t("done.ready_many", { count: formatNumber(ready.length) }), kind: "success", timeout: 20_000 });
    }
    if (failed.length === 1) {
      const [task] = failed;
      toasts.show({ text: t("done.failed", { name: task.task_name, reason: reason(task) }), kind: "error", timeout: 30_000 });
    } else if (failed.length) {
      toasts.show({ text: t("done.failed_many", { count: formatNumber(failed.length) }), kind: "error", timeout: 30_000 });
    }
    systemNotification(ready, failed, reason);
  }

  function updateTitle() {
    const title = t("app.title");
    document.title = unseen ? `(${unseen}) ${title}` : title;
  }

  /** The person is here: what finished has been seen. */
  function seen() {
    if (!unseen || document.hidden) return;
    unseen = 0;
    updateTitle();
  }

  function reset() {
    unseen = 0;
    document.title = t("app.title");
  }

  return { notice, seen, updateTitle, reset };
}

function systemNotification(ready, failed, reason) {
  if (!notificationsAllowed()) return;
  if (!document.hidden && document.hasFocus()) return; // the toast says it where the person looks
  const one = ready.length + failed.length === 1 ? ready[0] || failed[0] : null;
  const title = failed.length ? t("notify.failed") : t("notify.ready");
  const body = one
    ? (one.status === "succeeded" ? one.task_name : `${one.task_name}: ${reason(one)}`)
    : [ready.length ? t("done.ready_many", { count: formatNumber(ready.length) }) : "",
      failed.length ? t("done.failed_many", { count: formatNumber(failed.length) }) : ""].filter(Boolean).join(" ");
  try {
    const note = new Notification(title, { body, tag: one ? `download-center-${one.id}` : "download-center" });
    note.onclick = () => { window.focus(); note.close(); };
  } catch { /* a browser that only notifies from a service worker: the toast and title say it */ }
}

/** Whether the person allowed system notifications (then a hidden tab keeps watching). */
export function notificationsAllowed() {
  return "Notification" in window && Notification.permission === "granted";
}

/** Whether to offer "Notify me": the browser could ask, and this browser was never asked from here. */
export function canOfferNotify() {
  if (!("Notification" in window) || Notification.permission !== "default") return false;
  try { return !localStorage.getItem(NOTIFY_ASKED_KEY); } catch { return true; }
}

/** Ask the browser for notifications, once: the offer is not made again, whatever the answer. */
export async function askNotify() {
  try { localStorage.setItem(NOTIFY_ASKED_KEY, "1"); } catch { /* storage blocked: asked this once */ }
  try { await Notification.requestPermission(); } catch { /* refused or unsupported */ }
}
