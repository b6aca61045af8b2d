// Drawing the list: the heading, the summary line, the table (cards at narrow
// widths: the stylesheet lays the same rows out as cards, each cell labelled
// by its data-label), and Load more. Parts redraw on their own, a single row
// when only its task changed, so that a list polled every second neither
// flickers nor loses the keyboard's place (downloads-focus.js).

import { askNotify, canOfferNotify } from "./downloads-announcer.js";
import { filesRow, hasFiles, hasRanges, partsNote, rangesNote, segmentsText } from "./downloads-files.js";
import { captureFocus, restoreFocus } from "./downloads-focus.js";
import { ACTIVE, isFiltered, seesOthers } from "./downloads-model.js";
import { h, replace, uid } from "./dom.js";
import { addStrings, formatBytes, formatNumber, formatTime, t } from "./i18n.js";

addStrings({
  en: {
    "dl.heading": "Your downloads",
    "dl.heading_admin": "All downloads",
    "dl.heading_tenant": "Downloads of tenant {tenant}",
    "col.task_name": "Task name",
    "col.file_name": "File name",
    "col.kind": "Kind / format",
    "col.status": "Status",
    "col.progress": "Progress",
    "col.size": "Size",
    "col.created": "Created",
    "col.finished": "Finished",
    "col.sha256": "SHA-256",
    "col.owner": "Owner",
    "col.actions": "Actions",
    "status.queued": "queued",
    "status.running": "running",
    "status.canceling": "canceling",
    "status.succeeded": "succeeded",
    "status.failed": "failed",
    "status.canceled": "canceled",
    "status.expired": "expired",
    "load_more": "Load more",
    "loading": "Loading…",
    "summary.count": "{count} shown",
    "summary.count_more": "{count} shown, more below",
    "summary.load_failed": "The list could not be loaded: {message}",
    "summary.poll_failed": "Updates paused: {message}. Trying again…",
    "try_again": "Try again",
    "empty.none": "No downloads yet. “New export” makes one.",
    "empty.filtered": "No downloads match these filters.",
    "progress.label": "Progress of {name}",
    "progress.rows": "{rows} rows",
    "progress.rows_one": "{rows} row",
    "progress.files": "{rows} files",
    "progress.files_one": "{rows} file",
    "progress.waiting": "Waiting to start",
    "progress.starting": "Starting…",
    "progress.stopping": "Stopping…",
    "progress.stopped": "stopped",
    "none": "—",
    "warning": "Warning",
  },
  zh: {
    "dl.heading": "我的下载",
    "dl.heading_admin": "全部下载",
    "dl.heading_tenant": "租户 {tenant} 的下载",
    "col.task_name": "任务名称",
    "col.file_name": "文件名",
    "col.kind": "类型 / 格式",
    "col.status": "状态",
    "col.progress": "进度",
    "col.size": "大小",
    "col.created": "创建时间",
    "col.finished": "完成时间",
    "col.sha256": "SHA-256",
    "col.owner": "所有者",
    "col.actions": "操作",
    "status.queued": "排队中",
    "status.running": "运行中",
    "status.canceling": "取消中",
    "status.succeeded": "已完成",
    "status.failed": "失败",
    "status.canceled": "已取消",
    "status.expired": "已过期",
    "load_more": "加载更多",
    "loading": "加载中…",
    "summary.count": "显示 {count} 项",
    "summary.count_more": "显示 {count} 项，还有更多",
    "summary.load_failed": "无法加载列表：{message}",
    "summary.poll_failed": "更新暂停：{message}。正在重试…",
    "try_again": "重试",
    "empty.none": "还没有下载。点击“新建导出”创建一个。",
    "empty.filtered": "没有符合筛选条件的下载。",
    "progress.label": "{name} 的进度",
    "progress.rows": "{rows} 行",
    "progress.rows_one": "{rows} 行",
    "progress.files": "{rows} 个文件",
    "progress.files_one": "{rows} 个文件",
    "progress.waiting": "等待开始",
    "progress.starting": "正在开始…",
    "progress.stopping": "正在停止…",
    "progress.stopped": "已停止",
    "none": "—",
    "warning": "警告",
  },
});

/**
 * The drawing of one mounted list into `container`: {render(), renderBody(), renderRow(id),
 * renderMeta(), renderMore(), findRow(id)}. render() draws it all anew (first, and on a new
 * language); the others redraw their part from the model, and do nothing before render().
 * hooks: {container, model, user, actions (downloads-actions.js), filters (downloads-filters.js),
 * load({more}), isStopped()}.
 */
export function createTable({ container, model, user, actions, filters, load, isStopped }) {
  const others = seesOthers(user);
  const els = {}; // the parts redrawn on their own: tbody, summary, more, notify

  function columns() {
    return [
      ["task_name", t("col.task_name")],
      ["file_name", t("col.file_name")],
      ["kind", t("col.kind")],
      ["status", t("col.status")],
      ["progress", t("col.progress")],
      ["size", t("col.size")],
      ["created", t("col.created")],
      ["finished", t("col.finished")],
      ["sha256", t("col.sha256")],
      ...(others ? [["owner", t("col.owner")]] : []),
      ["actions", t("col.actions")],
    ];
  }

  function render() {
    const focus = captureFocus(container);
    const headingId = uid("downloads-heading");
    const heading = user.isAdmin ? t("dl.heading_admin")
      : user.isTenantAdmin ? t("dl.heading_tenant", { tenant: user.tenant }) : t("dl.heading");
    els.tbody = h("tbody", {});
    els.summary = h("span", { class: "dl-summary", role: "status" });
    els.notify = h("span", { class: "dl-notify" });
    els.more = h("div", { class: "dl-more" });
    const table = h("table", { class: `dl-table${others ? " with-owner" : ""}`, role: "table", "aria-labelledby": headingId, tabindex: "-1" },
      h("thead", {}, h("tr", { role: "row" },
        columns().map(([key, label]) => h("th", { scope: "col", role: "columnheader", class: `c-${key}` }, label)))),
      els.tbody);
    replace(container,
      // the page's #app is a live region; a list that updates every second must not talk
      h("div", { class: "dl", "aria-live": "off" },
        h("div", { class: "dl-head" }, h("h2", { id: headingId }, heading)),
        filters.form(),
        h("div", { class: "dl-meta" }, els.summary, els.notify),
        h("div", { class: "dl-scroll" }, table),
        els.more));
    renderBody();
    renderMeta();
    renderMore();
    restoreFocus(container, focus, findRow);
  }

  function renderBody() {
    if (!els.tbody) return;
    const focus = captureFocus(container);
    if (!model.order.length) {
      const text = model.loading ? t("loading") : model.loadError ? ""
        : isFiltered(model.filters) ? t("empty.filtered") : t("empty.none");
      replace(els.tbody, text
        ? h("tr", { role: "row", class: "dl-empty" }, h("td", { role: "cell", colspan: String(columns().length) }, text))
        : null);
    } else {
      replace(els.tbody, model.order.map((id) => rows(model.tasks.get(id))));
    }
    restoreFocus(container, focus, findRow);
  }

  function findRow(id) {
    if (!els.tbody) return null;
    return [...els.tbody.children].find((tr) => tr.dataset.id === id) || null;
  }

  /** A task's row, and its details row when they are shown (they are redrawn together). */
  function renderRow(id) {
    const old = findRow(id);
    const task = model.tasks.get(id);
    if (!old || !task) return renderBody();
    const focus = captureFocus(container);
    const details = old.nextElementSibling;
    if (details && details.dataset.detailsFor === id) details.remove();
    old.replaceWith(...rows(task));
    restoreFocus(container, focus, findRow);
  }

  function renderMeta() {
    if (!els.summary) return;
    const count = model.order.length;
    let text = model.loading ? t("loading")
      : model.nextCursor ? t("summary.count_more", { count: formatNumber(count) })
        : t("summary.count", { count: formatNumber(count) });
    const parts = [];
    if (model.loadError) {
      text = t("summary.load_failed", { message: errorText(model.loadError) });
      parts.push(h("button", { type: "button", "data-key": "retry-load", onclick: () => load() }, t("try_again")));
    } else if (model.pollError) {
      parts.push(h("span", { class: "dl-warn" }, t("summary.poll_failed", { message: errorText(model.pollError) })));
    }
    const focus = captureFocus(container);
    replace(els.summary, h("span", { class: model.loadError ? "error" : "" }, text), parts);
    replace(els.notify, canOfferNotify()
      ? h("button", { type: "button", class: "dl-small", "data-key": "notify", title: t("notify.offer_title"),
        onclick: onNotify }, t("notify.offer"))
      : null);
    restoreFocus(container, focus, findRow);
  }

  async function onNotify() {
    await askNotify();
    if (!isStopped()) renderMeta();
  }

  function renderMore() {
    if (!els.more) return;
    const focus = captureFocus(container);
    // no Load more while a first page (new filters, a refresh) is on its way: its cursor is the old page's
    replace(els.more, model.nextCursor && !model.loading
      ? h("button", { type: "button", "data-key": "more", "aria-disabled": model.loadingMore ? "true" : null,
        onclick: () => { if (!model.loadingMore) load({ more: true }); } },
      model.loadingMore ? t("loading") : t("load_more"))
      : null);
    restoreFocus(container, focus, findRow);
  }

  /** The task's row, then its files when they are shown (a parts task's details). */
  function rows(task) {
    const open = hasFiles(task) && model.expanded.has(task.id);
    return [row(task, open), open ? filesRow(task, { columns: columns().length, onFile: actions.openFile }) : null]
      .filter(Boolean);
  }

  function row(task, open) {
    const s = task.status;
    const cell = (key, ...content) => h("td", { role: "cell", class: `c-${key}`, "data-label": label(key) }, content);
    const classes = `dl-row s-${s}${model.fresh.has(task.id) ? " fresh" : ""}${open ? " open" : ""}`;
    return h("tr", { role: "row", "data-id": task.id, class: classes },
      h("th", { scope: "row", role: "rowheader", class: "c-task_name", "data-label": label("task_name") },
        h("span", { class: "dl-name" }, task.task_name)),
      cell("file_name", h("span", { class: "dl-file" }, task.file_name)),
      cell("kind", h("span", { class: "dl-kind" }, task.kind), h("span", { class: "dl-format" }, task.format)),
      cell("status", h("span", { class: `dl-status s-${s}` }, t(`status.${s}`)), problems(task)),
      cell("progress", progress(task)),
      cell("size", task.size === null || task.size === undefined ? none() : formatBytes(task.size), partsNote(task)),
      cell("created", time(task.created_at)),
      cell("finished", task.finished_at ? time(task.finished_at) : none()),
      cell("sha256", sha(task)),
      others ? cell("owner", h("span", { title: `${task.owner} · ${task.tenant}` }, task.owner_name),
        user.isAdmin ? h("span", { class: "dl-tenant" }, task.tenant) : null) : null,
      cell("actions", actions.buttons(task)));
  }

  function label(key) {
    return (columns().find(([k]) => k === key) || [key, key])[1];
  }

  function sha(task) {
    if (hasRanges(task)) return rangesNote(task);
    if (!task.sha256) return none();
    const short = `${task.sha256.slice(0, 10)}…${task.sha256.slice(-4)}`;
    return h("span", { class: "dl-sha" },
      h("code", { title: task.sha256 }, short),
      h("button", { type: "button", class: "dl-small", "data-action": "copy", "aria-label": t("action.copy_sha"),
        onclick: (event) => actions.copyHash(task.sha256, event.currentTarget) }, t("action.copy")));
  }

  return { render, renderBody, renderRow, renderMeta, renderMore, findRow };
}

function none() {
  return h("span", { class: "dl-none", "aria-hidden": "true" }, t("none"));
}

function time(iso) {
  return h("time", { datetime: iso, title: iso }, formatTime(iso));
}

/** The task's error and warnings, under its status. */
function problems(task) {
  const out = [];
  if (task.error && (task.error.code || task.error.message)) {
    out.push(h("p", { class: "dl-error" }, h("code", {}, task.error.code || ""), " ", task.error.message || ""));
  }
  for (const w of task.warnings || []) {
    out.push(h("p", { class: "dl-warning" }, h("span", { class: "dl-warn-label" }, t("warning")), " ",
      h("code", {}, w.code), " ", w.message));
  }
  return out;
}

/**
 * The progress cell: a bar (indeterminate while an active task has no percent yet) with what was
 * done in words, or just the words (or a dash) for a task that ended without a percent.
 */
function progress(task) {
  const p = task.progress || {};
  const s = task.status;
  const active = ACTIVE.has(s);
  const percent = s === "succeeded" ? 100 : typeof p.percent === "number" ? Math.max(0, Math.min(100, p.percent)) : null;
  const rows = p.rows || 0;
  const bytes = p.bytes || 0;
  const bits = [];
  if (percent !== null) bits.push(`${formatNumber(Math.floor(percent))}%`);
  if (rows || bytes || s === "succeeded") {
    // a zip bundle counts the files it holds in `rows`
    const unit = task.format === "zip" ? "progress.files" : "progress.rows";
    bits.push(t(rows === 1 ? `${unit}_one` : unit, { rows: formatNumber(rows) }), formatBytes(bytes));
  } else if (active) {
    bits.push(t(s === "queued" ? "progress.waiting" : s === "running" ? "progress.starting" : "progress.stopping"));
  }
  if (!active && s !== "succeeded" && percent !== null) bits.push(t("progress.stopped"));
  const text = bits.join(" · ");
  // a build in segments: how many are done, on a line of its own (the bar's line is full)
  const segments = segmentsText(task);
  const segmentsLine = segments ? h("span", { class: "dl-segments" }, segments) : null;
  if (percent === null && !active) {
    if (!text && !segments) return none();
    return [text ? h("span", { class: "dl-progress-text" }, text) : null, segmentsLine];
  }
  const fill = h("span", { class: "dl-bar-fill" });
  if (percent !== null) fill.style.width = `${percent}%`;
  const bar = h("div", {
    class: `dl-bar s-${s}${percent === null ? " indeterminate" : ""}`,
    role: "progressbar",
    "aria-label": t("progress.label", { name: task.task_name }),
    "aria-valuemin": "0",
    "aria-valuemax": "100",
    "aria-valuenow": percent === null ? null : String(Math.round(percent * 10) / 10),
    "aria-valuetext": [text, segments].filter(Boolean).join("; ") || null,
  }, fill);
  return h("div", { class: "dl-progress" }, bar, h("span", { class: "dl-progress-text" }, text), segmentsLine);
}

/** An API error in words: its code first, except for the network's (whose message says it all). */
function errorText(err) {
  return err && err.code && err.code !== "network" ? `${err.code}: ${err.message}` : (err && err.message) || String(err);
}
