// The files of a segmented export built as parts (output "parts"): such a task
// has no one file (its url is null, GET .../file answers 409 multiple_files)
// but `files`, each a complete file with its own checksums, and a manifest.json
// that lists them. Its row offers a "N files" toggle instead of Download; the
// row's details (a row of their own, under it) list each file as a link, with
// its size, rows and SHA-256, and the manifest last.
//
// And the segments of a build in progress: "3 of 8 segments done", from
// progress.segments, beside the progress bar. A single file built in segments
// has no SHA-256 of the whole but `ranges`, each byte range with its own: its
// SHA-256 cell says "3 ranges", their checksums in its title.

import { h } from "./dom.js";
import { addStrings, formatBytes, formatNumber, t } from "./i18n.js";

addStrings({
  en: {
    "files.toggle": "{count} files",
    "files.show_label": "Show the {count} files of {name}",
    "files.list_label": "Files of {name}",
    "files.summary": "{count} files, {size}, {rows} rows",
    "files.summary_zip": "{count} files, {size}, {rows} files inside",
    "files.in_parts": "in {count} files",
    "files.rows": "{rows} rows",
    "files.rows_one": "{rows} row",
    "files.manifest": "lists every file with its size, rows, MD5 and SHA-256",
    "files.cli": "To save them all, each checked:",
    "files.gone": "“{file}” of “{name}” is no longer offered.",
    "action.show_files": "Show files",
    "segments.progress": "{done} of {total} segments done",
    "segments.running": "{count} building",
    "segments.failed": "{count} failed",
    "segments.join": ", ",
    "ranges.count": "{count} ranges",
    "ranges.title": "Built in segments: no SHA-256 of the whole file, one for each byte range",
    "ranges.item": "Segment {segment}, bytes {first}–{last}: {sha256}",
    "ranges.item_empty": "Segment {segment}, no bytes: {sha256}",
  },
  zh: {
    "files.toggle": "{count} 个文件",
    "files.show_label": "显示 {name} 的 {count} 个文件",
    "files.list_label": "{name} 的文件",
    "files.summary": "{count} 个文件，{size}，{rows} 行",
    "files.summary_zip": "{count} 个文件，{size}，内含 {rows} 个文件",
    "files.in_parts": "共 {count} 个文件",
    "files.rows": "{rows} 行",
    "files.rows_one": "{rows} 行",
    "files.manifest": "列出每个文件的大小、行数、MD5 和 SHA-256",
    "files.cli": "一次保存全部并逐个校验：",
    "files.gone": "“{name}”的“{file}”已不再提供。",
    "action.show_files": "显示文件",
    "segments.progress": "{total} 个分段中已完成 {done} 个",
    "segments.running": "{count} 个正在构建",
    "segments.failed": "{count} 个失败",
    "segments.join": "，",
    "ranges.count": "{count} 个字节段",
    "ranges.title": "分段构建：整个文件没有 SHA-256，每个字节段各有一个",
    "ranges.item": "分段 {segment}，字节 {first}–{last}：{sha256}",
    "ranges.item_empty": "分段 {segment}，无字节：{sha256}",
  },
});

/** Whether the task is a finished export in parts: files to list rather than one to download. */
export function hasFiles(task) {
  return task.status === "succeeded" && Array.isArray(task.files) && task.files.length > 0;
}

/** The id of a task's details row (what its toggle controls). */
export function detailsId(taskId) {
  return `files-${taskId}`;
}

/** The row's toggle of its files: a button that says how many, and whether they are shown. */
export function filesToggle(task, { expanded, busy, onToggle }) {
  const count = formatNumber(task.files.length);
  return h("button", {
    type: "button",
    class: `primary dl-files-toggle${expanded ? " open" : ""}`,
    "data-action": "files",
    "aria-expanded": expanded ? "true" : "false",
    "aria-controls": expanded ? detailsId(task.id) : null,
    "aria-label": t("files.show_label", { count, name: task.task_name }),
    "aria-disabled": busy ? "true" : null,
    onclick: () => onToggle(task.id),
  }, h("span", { class: "dl-caret", "aria-hidden": "true" }), " ", t("files.toggle", { count }));
}

/** "in 4 files", under a parts task's size. */
export function partsNote(task) {
  return hasFiles(task)
    ? h("span", { class: "dl-parts-note" }, t("files.in_parts", { count: formatNumber(task.files.length) }))
    : null;
}

/**
 * The details row under a parts task: its files as links (then the manifest), each with its
 * size, rows and SHA-256. onFile(taskId, name, event) runs on a click of a link; `columns` is
 * the table's column count (the row's one cell spans them all).
 */
export function filesRow(task, { columns, onFile }) {
  const unit = task.format === "zip" ? "progress.files" : "files.rows";
  const rows = task.files.reduce((sum, f) => sum + (f.rows || 0), 0);
  const link = (file, index) => h("a", {
    href: file.url || null,
    class: "dl-file-link",
    "data-action": `file-${index}`,
    "data-file": file.name,
    // (honoured for a same-origin URL only: a presigned URL's Content-Disposition names the file)
    download: file.name,
    onclick: (event) => onFile(task.id, file.name, event),
  }, file.name);
  const item = (file, index, meta) => h("li", { class: "dl-file-item" },
    h("span", { class: "dl-file-name" }, link(file, index)),
    h("span", { class: "dl-file-size" }, formatBytes(file.size)),
    meta);
  const fileItems = task.files.map((file, i) => item(file, i + 1, [
    h("span", { class: "dl-file-rows" },
      t(file.rows === 1 ? `${unit}_one` : unit, { rows: formatNumber(file.rows || 0) })),
    h("span", { class: "dl-file-sha" }, h("span", { class: "dl-file-sha-label" }, "SHA-256 "),
      h("code", {}, file.sha256 || "")),
  ]));
  const manifest = task.manifest
    ? item(task.manifest, 0, h("span", { class: "dl-file-about" }, t("files.manifest")))
    : null;
  if (manifest) manifest.classList.add("dl-manifest");
  const summaryKey = task.format === "zip" ? "files.summary_zip" : "files.summary";
  return h("tr", { class: "dl-details", "data-details-for": task.id, id: detailsId(task.id) },
    h("td", { colspan: String(columns), class: "dl-details-cell" },
      h("p", { class: "dl-files-summary" }, t(summaryKey, {
        count: formatNumber(task.files.length), size: formatBytes(task.size), rows: formatNumber(rows),
      })),
      h("ul", { class: "dl-files", "aria-label": t("files.list_label", { name: task.task_name }) },
        fileItems, manifest),
      h("p", { class: "dl-files-cli" }, t("files.cli"), " ",
        h("code", {}, `dlc download ${task.id}`))));
}

/**
 * "3 of 8 segments done, 2 building" for a task built in segments that has not succeeded
 * (a finished export says its files, or nothing: how it was built is no news then); null otherwise.
 */
export function segmentsText(task) {
  const seg = task.progress && task.progress.segments;
  if (!seg || !seg.total || task.status === "succeeded" || task.status === "expired") return null;
  const bits = [t("segments.progress", { done: formatNumber(seg.succeeded || 0), total: formatNumber(seg.total) })];
  if (seg.running && (task.status === "running" || task.status === "canceling")) {
    bits.push(t("segments.running", { count: formatNumber(seg.running) }));
  }
  if (seg.failed) bits.push(t("segments.failed", { count: formatNumber(seg.failed) }));
  return bits.join(t("segments.join"));
}

/** Whether the task is one file built in segments, checked by its byte ranges (no SHA-256 of the whole). */
export function hasRanges(task) {
  return !task.sha256 && Array.isArray(task.ranges) && task.ranges.length > 0;
}

/** The SHA-256 cell of such a task: "3 ranges", each range's SHA-256 in its title (one a line). */
export function rangesNote(task) {
  const lines = task.ranges.map((r) => t(r.size ? "ranges.item" : "ranges.item_empty", {
    segment: formatNumber(r.segment),
    first: formatNumber(r.start),
    last: formatNumber(r.start + r.size - 1),
    sha256: r.sha256,
  }));
  return h("span", { class: "dl-ranges", title: [t("ranges.title"), ...lines].join("\n") },
    t("ranges.count", { count: formatNumber(task.ranges.length) }));
}
