// What a person can do to a row: download, cancel, retry, rename, delete, copy
// the SHA-256. Which buttons a row has follows its status (the API would refuse
// the others); one action at a time per task; every failure is a toast that
// names the action, and a 404 means the task is gone, so its row goes too.
// Rename and delete ask first, in a modal dialog.

import { openDialog } from "./downloads-dialog.js";
import { detailsId, filesToggle, hasFiles } from "./downloads-files.js";
import { h, uid } from "./dom.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  en: {
    "action.download": "Download",
    "action.cancel": "Cancel",
    "action.retry": "Retry",
    "action.delete": "Delete",
    "action.rename": "Rename",
    "action.copy": "Copy",
    "action.copy_sha": "Copy SHA-256",
    "copy.done": "SHA-256 copied.",
    "copy.manual": "This browser cannot copy here; the SHA-256 is {hash}",
    "delete.title": "Delete this download?",
    "delete.text": "“{name}” and its file will be deleted. This cannot be undone.",
    "delete.confirm": "Delete",
    "delete.keep": "Don’t delete",
    "delete.done": "“{name}” was deleted.",
    "rename.title": "Rename download",
    "rename.label": "Task name",
    "rename.save": "Save",
    "rename.close": "Close",
    "rename.done": "Renamed to “{name}”.",
    "error.action": "{action} failed: {code}: {message}",
    "download.unavailable": "“{name}” has no file to download now ({status}).",
    "files.not_shown": "“{name}” is {count} files; its row lists them (the filters hide it now).",
  },
  zh: {
    "action.download": "下载",
    "action.cancel": "取消",
    "action.retry": "重试",
    "action.delete": "删除",
    "action.rename": "重命名",
    "action.copy": "复制",
    "action.copy_sha": "复制 SHA-256",
    "copy.done": "已复制 SHA-256。",
    "copy.manual": "此浏览器无法在这里复制；SHA-256 为 {hash}",
    "delete.title": "删除这个下载？",
    "delete.text": "“{name}”及其文件将被删除，且无法恢复。",
    "delete.confirm": "删除",
    "delete.keep": "不删除",
    "delete.done": "已删除“{name}”。",
    "rename.title": "重命名下载",
    "rename.label": "任务名称",
    "rename.save": "保存",
    "rename.close": "关闭",
    "rename.done": "已重命名为“{name}”。",
    "error.action": "{action}失败：{code}：{message}",
    "download.unavailable": "“{name}”现在没有可下载的文件（{status}）。",
    "files.not_shown": "“{name}”包含 {count} 个文件，列在它的行中（当前筛选条件隐藏了它）。",
  },
});

/**
 * The row actions of one mounted list. hooks: {ctx, model, container, isStopped(), apply(task, sent),
 * removeTask(id), renderRow(id), findRow(id), kick()}: apply takes an answer into the model and the
 * row, kick polls soon (after an action the next change is likely near).
 * Returns {buttons(task), download(id), openFile(id, name, event), copyHash(hash, button), closeDialog()}.
 */
export function createRowActions({ ctx, model, container, isStopped, apply, removeTask, renderRow, findRow, kick }) {
  let dialog = null;

  function actionError(label, err) {
    ctx.toasts.show({
      text: t("error.action", { action: label, code: err.code || "error", message: err.message || String(err) }),
      kind: "error",
      timeout: 15_000,
    });
  }

  /** Run an action for a task: one at a time per task, errors as toasts, then poll soon. */
  async function act(id, label, run) {
    if (model.pending.has(id)) return;
    const shown = model.tasks.has(id); // a toast's Download may name a task the filters hide now
    if (shown) {
      model.pending.add(id);
      renderRow(id);
    }
    try {
      await run(performance.now());
    } catch (err) {
      if (!isStopped()) {
        actionError(label, err);
        if (err.status === 404 && model.tasks.has(id)) removeTask(id);
      }
    } finally {
      model.pending.delete(id);
      if (!isStopped() && model.tasks.has(id)) renderRow(id);
    }
    if (!isStopped()) kick();
  }

  /** The task's file; a task in parts has several: its row shows them (the toast's "Show files"). */
  function download(id) {
    return act(id, t("action.download"), async (sent) => {
      const fresh = await ctx.api.get(id); // a fresh presigned URL: the listed one may be minutes old
      apply(fresh, sent);
      if (fresh.status === "succeeded" && fresh.url) window.location.assign(fresh.url);
      else if (hasFiles(fresh)) showFiles(fresh);
      else unavailable(fresh);
    });
  }

  function unavailable(task) {
    ctx.toasts.show({
      text: t("download.unavailable", { name: task.task_name, status: t(`status.${task.status}`) }),
      kind: "error",
    });
  }

  /** Open a parts task's details and put the keyboard on its first file. */
  function showFiles(task) {
    if (!findRow(task.id)) {
      ctx.toasts.show({ text: t("files.not_shown", { name: task.task_name, count: task.files.length }) });
      return;
    }
    model.expanded.add(task.id);
    renderRow(task.id);
    const first = document.getElementById(detailsId(task.id))?.querySelector("a");
    if (first) {
      first.focus();
      first.scrollIntoView({ block: "nearest" });
    }
  }

  function toggleFiles(id) {
    if (model.expanded.has(id)) model.expanded.delete(id);
    else model.expanded.add(id);
    renderRow(id);
  }

  /**
   * A click on one of a parts task's files (or its manifest): like Download, with a fresh URL
   * (the one in the link may have expired while the page sat open). A click that means "elsewhere"
   * (a new tab, a modifier, the middle button) is the browser's, with the link as it is.
   */
  function openFile(id, name, event) {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    act(id, t("action.download"), async (sent) => {
      const fresh = await ctx.api.get(id);
      apply(fresh, sent);
      const file = [...(fresh.files || []), fresh.manifest].find((f) => f && f.name === name);
      if (fresh.status === "succeeded" && file && file.url) window.location.assign(file.url);
      else unavailable(fresh);
    });
  }

  function cancel(id) {
    return act(id, t("action.cancel"), async (sent) => apply(await ctx.api.cancel(id), sent));
  }

  function retry(id) {
    return act(id, t("action.retry"), async (sent) => apply(await ctx.api.retry(id), sent));
  }

  function remove(id) {
    const task = model.tasks.get(id);
    ask({
      title: t("delete.title"),
      body: [h("p", {}, t("delete.text", { name: task.task_name }))],
      confirm: { label: t("delete.confirm"), class: "danger" },
      dismiss: t("delete.keep"),
      focusDismiss: true,
      returnTo: { id, action: "delete" },
      onConfirm: async () => {
        // errors of a delete are toasts like the row's other actions; the dialog closes either way
        try {
          await ctx.api.remove(id);
        } catch (err) {
          if (isStopped()) return;
          actionError(t("action.delete"), err);
          if (err.status === 404 && model.tasks.has(id)) removeTask(id);
          return;
        }
        if (isStopped()) return;
        removeTask(id);
        ctx.toasts.show({ text: t("delete.done", { name: task.task_name }), kind: "success" });
      },
    });
  }

  function rename(id) {
    const task = model.tasks.get(id);
    const inputId = uid("rename");
    const input = h("input", {
      id: inputId, name: "task_name", value: task.task_name, required: true, maxlength: "200",
      autocomplete: "off", spellcheck: "false",
    });
    ask({
      title: t("rename.title"),
      body: [h("label", { for: inputId }, t("rename.label")), input],
      confirm: { label: t("rename.save"), class: "primary" },
      dismiss: t("rename.close"),
      initialFocus: input,
      returnTo: { id, action: "rename" },
      onConfirm: async () => {
        const name = input.value;
        if (name === model.tasks.get(id)?.task_name) return;
        const sent = performance.now();
        const renamed = await ctx.api.rename(id, name);
        if (isStopped()) return;
        apply(renamed, sent);
        ctx.toasts.show({ text: t("rename.done", { name: renamed.task_name }), kind: "success" });
      },
    });
    input.select();
  }

  /** One dialog at a time; when it closes, focus goes back to the row's button (returnTo). */
  function ask({ returnTo, ...options }) {
    closeDialog();
    dialog = openDialog({
      ...options,
      onClose: (el) => {
        if (dialog === el) dialog = null;
        if (isStopped()) return;
        // the row may have been redrawn while the dialog was open: focus its button again
        const row = returnTo && findRow(returnTo.id);
        const target = row && (row.querySelector(`[data-action="${returnTo.action}"]`) || row.querySelector("button"));
        if (target) target.focus();
        else container.querySelector(".dl-table")?.focus(); // the row is gone (deleted)
        kick();
      },
    });
  }

  function closeDialog() {
    if (dialog) dialog.close();
  }

  async function copyHash(hash, button) {
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(hash);
        copied = true;
      }
    } catch { copied = false; }
    if (!copied) {
      // plain http: no Clipboard API; the old way still works in most browsers
      const area = h("textarea", { class: "dl-offscreen", readonly: true, "aria-hidden": "true", tabindex: "-1" });
      area.value = hash;
      document.body.append(area);
      area.select();
      try { copied = document.execCommand("copy"); } catch { copied = false; }
      area.remove();
      if (button && button.isConnected) button.focus();
    }
    ctx.toasts.show(copied
      ? { text: t("copy.done"), kind: "success", timeout: 3000 }
      : { text: t("copy.manual", { hash }), timeout: 30_000 });
  }

  /** The row's action buttons: those its status allows, marked busy while one runs. */
  function buttons(task) {
    const s = task.status;
    const busy = model.pending.has(task.id);
    const button = (action, text, run, cls = null) => h("button", {
      type: "button", class: cls, "data-action": action, "aria-disabled": busy ? "true" : null,
      onclick: () => run(task.id),
    }, text);
    return h("div", { class: "dl-actions" },
      hasFiles(task) ? filesToggle(task, { expanded: model.expanded.has(task.id), busy, onToggle: toggleFiles })
        : s === "succeeded" ? button("download", t("action.download"), download, "primary") : null,
      s === "queued" || s === "running" ? button("cancel", t("action.cancel"), cancel) : null,
      s === "failed" || s === "canceled" ? button("retry", t("action.retry"), retry) : null,
      button("rename", t("action.rename"), rename),
      s === "running" || s === "canceling" ? null : button("delete", t("action.delete"), remove, "danger"));
  }

  return { buttons, download, openFile, copyHash, closeDialog };
}
