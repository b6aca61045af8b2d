// The "New export" form: a dialog generated from GET /kinds.
//
// Each kind's params_schema becomes one field per top-level property, labelled
// with the property's name and typed from the schema (text, number, checkbox,
// select, one-per-line list, repeatable rows, key/value rows, a fieldset for a
// nested object). Create sends POST /downloads with an Idempotency-Key made once
// per opening, so a double click or a retry after a lost answer cannot make a
// second task. The API's validation details are shown beside the field each
// one names (`params.filters[0].op` -> the op of the first filter row). A kind
// that can split also gets the segmented build's choices (form-split.js).
//
// What people type is only ever read from .value and shown as text.

import { h, replace, uid } from "./dom.js";
import { SplitSection } from "./form-split.js";
import { addStrings, formatNumber, onLangChange, t } from "./i18n.js";

addStrings({
  en: {
    "form.title": "New export",
    "form.close": "Close",
    "form.loading": "Loading the kinds of export…",
    "form.load_failed": "Cannot load the kinds of export: {message}",
    "form.retry": "Try again",
    "form.no_kinds": "There is no kind of export you may create.",
    "form.required_note": "Fields marked * are required.",
    "form.task_name": "Task name",
    "form.task_name_hint": "Your name for this export (up to 200 characters).",
    "form.kind": "Kind",
    "form.format": "Format",
    "form.file_name": "File name",
    "form.file_name_hint": "Optional. Without it the file is named after the task; the format's extension is added when missing.",
    "form.params": "Parameters",
    "form.no_params": "This kind has no parameters.",
    "form.use_example": "Use example",
    "form.use_example_n": "Use example {n}",
    "form.example_label": "Fills in the parameters with this example:",
    "form.create": "Create",
    "form.creating": "Creating…",
    "form.cancel": "Cancel",
    "form.not_created": "Not created: {message}",
    "form.network": "Cannot reach the service. Create again sends the same request, so it cannot make a second export.",
    "form.queued": "“{name}” queued",
    "hint.range": "From {min} to {max}.",
    "hint.min": "At least {min}.",
    "hint.max": "At most {max}.",
    "hint.default": "Default: {value}.",
    "hint.lines": "One per line.",
    "hint.json": "JSON or text: 42, true, [\"a\", \"b\"]; \"42\" is the text 42.",
    "hint.allowed": "You may use: {list}.",
    "bool.unset": "not set: the default applies",
    "bool.reset": "Use the default",
    "bool.reset_label": "Use the default for {name}",
    "enum.unset": "(default)",
    "enum.default": "(default: {value})",
    "enum.choose": "Choose…",
    "rows.add": "Add row",
    "rows.add_label": "Add a row to {name}",
    "rows.remove": "Remove",
    "rows.remove_label": "Remove {name} #{n}",
    "map.key": "Key",
    "map.value": "Value",
    "issue.item": "item {n}",
  },
  zh: {
    "form.title": "新建导出",
    "form.close": "关闭",
    "form.loading": "正在加载导出类型…",
    "form.load_failed": "无法加载导出类型：{message}",
    "form.retry": "重试",
    "form.no_kinds": "没有您可以创建的导出类型。",
    "form.required_note": "标有 * 的字段为必填项。",
    "form.task_name": "任务名称",
    "form.task_name_hint": "这个导出的名称（最多 200 个字符）。",
    "form.kind": "类型",
    "form.format": "格式",
    "form.file_name": "文件名",
    "form.file_name_hint": "可选。不填时以任务名称命名文件；缺少扩展名时会加上格式的扩展名。",
    "form.params": "参数",
    "form.no_params": "此类型没有参数。",
    "form.use_example": "使用示例",
    "form.use_example_n": "使用示例 {n}",
    "form.example_label": "用此示例填写参数：",
    "form.create": "创建",
    "form.creating": "正在创建…",
    "form.cancel": "取消",
    "form.not_created": "未创建：{message}",
    "form.network": "无法连接服务。再次点击“创建”会发送同一请求，不会重复创建导出。",
    "form.queued": "“{name}”已加入队列",
    "hint.range": "范围：{min} 到 {max}。",
    "hint.min": "至少 {min}。",
    "hint.max": "至多 {max}。",
    "hint.default": "默认值：{value}。",
    "hint.lines": "每行一项。",
    "hint.json": "JSON 或文本：42、true、[\"a\", \"b\"]；\"42\" 表示文本 42。",
    "hint.allowed": "可用：{list}。",
    "bool.unset": "未设置：使用默认值",
    "bool.reset": "使用默认值",
    "bool.reset_label": "{name} 使用默认值",
    "enum.unset": "（默认）",
    "enum.default": "（默认：{value}）",
    "enum.choose": "请选择…",
    "rows.add": "添加一行",
    "rows.add_label": "为 {name} 添加一行",
    "rows.remove": "删除",
    "rows.remove_label": "删除 {name} #{n}",
    "map.key": "键",
    "map.value": "值",
    "issue.item": "第 {n} 项",
  },
});

/** The open dialog's controller, if any: the form opens once at a time. */
let current = null;

/**
 * Open the form (a modal dialog). ctx: {api, session, config, toasts, user, base, downloads};
 * on success it calls ctx.downloads.add(task) and closes. Returns {dialog, close()}.
 */
export function openExportForm(ctx) {
  // (a dialog just closed is no longer open, though its close event may not have run yet)
  if (current && current.dialog.open) return current;
  const texts = new Texts();
  const opener = document.activeElement;
  // made once per opening: every Create of this dialog is the same request to the API
  const idempotencyKey = newKey();
  const headingId = uid("export-title");
  const form = h("form", { class: "export-form", "aria-labelledby": headingId });
  const dialog = h("dialog", { class: "export-dialog", "aria-labelledby": headingId }, form);
  const body = h("div", { class: "export-body" });
  const createButton = h("button", { type: "submit", class: "primary", disabled: true }, texts.text("form.create"));
  const close = () => { if (dialog.open) dialog.close(); };
  const closeButton = h("button", { type: "button", class: "icon", onclick: close }, "×");
  texts.attr(closeButton, "aria-label", "form.close");
  replace(form,
    h("header", {}, h("h2", { id: headingId }, texts.text("form.title")), closeButton),
    body,
    h("footer", {},
      h("button", { type: "button", onclick: close }, texts.text("form.cancel")),
      createButton));

  let editor = null; // the form's fields once the kinds are loaded
  let busy = false;

  async function load() {
    createButton.disabled = true;
    replace(body, h("p", { class: "loading", role: "status" }, texts.text("form.loading")));
    let kinds;
    try {
      kinds = (await ctx.api.kinds()).items || [];
    } catch (err) {
      if (!dialog.open) return;
      const retry = h("button", { type: "button", onclick: load }, texts.text("form.retry"));
      replace(body,
        h("p", { class: "form-error", role: "alert" }, texts.text("form.load_failed", { message: errorText(err) })),
        retry);
      retry.focus();
      return;
    }
    if (!dialog.open) return;
    if (!kinds.length) {
      replace(body, h("p", { class: "form-error", role: "alert" }, texts.text("form.no_kinds")));
      return;
    }
    editor = new Editor(kinds, texts);
    replace(body, editor.node);
    createButton.disabled = false;
    editor.taskName.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || !editor) return;
    busy = true;
    createButton.disabled = true;
    texts.set(createButton.firstChild, "form.creating");
    form.setAttribute("aria-busy", "true");
    editor.errors.clear();
    try {
      const task = await ctx.api.create(editor.request(), { idempotencyKey });
      close();
      ctx.toasts.show({ text: t("form.queued", { name: task.task_name }), kind: "success" });
      if (ctx.downloads) ctx.downloads.add(task);
    } catch (err) {
      if (dialog.open) editor.showError(err);
      // closed while it was sent: say so where the person still looks
      else ctx.toasts.show({ text: t("form.not_created", { message: errorText(err) }), kind: "error" });
    } finally {
      busy = false;
      createButton.disabled = false;
      texts.set(createButton.firstChild, "form.create");
      form.removeAttribute("aria-busy");
    }
  });

  const stopLang = onLangChange(() => texts.refresh());
  // signed out (by the person, or a refresh that failed): the form has nobody to create for
  const stopSession = ctx.session.onChange((session) => { if (!session.signedIn) close(); });
  dialog.addEventListener("close", () => {
    stopLang();
    stopSession();
    dialog.remove();
    if (current && current.dialog === dialog) current = null;
    if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
  });

  document.body.append(dialog);
  dialog.showModal();
  current = { dialog, close };
  load();
  return current;
}

/** What an ApiError says, in the page's language when the page made it up. */
function errorText(err) {
  if (err && err.code === "network") return t("form.network");
  return (err && err.message) || String(err);
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Text that follows the language: every node and attribute made here is
 * re-read from t() when the language changes, so an open form is translated
 * in place and keeps what was typed (and the focus).
 */
class Texts {
  constructor() {
    this.nodes = new Map();
    this.attrs = new Map();
  }

  text(key, vars = {}) {
    return this.set(document.createTextNode(""), key, vars);
  }

  set(node, key, vars = {}) {
    this.nodes.set(node, { key, vars });
    node.textContent = t(key, vars);
    return node;
  }

  attr(el, name, key, vars = {}) {
    if (!this.attrs.has(el)) this.attrs.set(el, new Map());
    this.attrs.get(el).set(name, { key, vars });
    el.setAttribute(name, t(key, vars));
    return el;
  }

  refresh() {
    for (const [node, { key, vars }] of this.nodes) node.textContent = t(key, vars);
    for (const [el, names] of this.attrs) {
      for (const [name, { key, vars }] of names) el.setAttribute(name, t(key, vars));
    }
  }
}

/**
 * The API's issues, each beside the field it names. A target is
 * {control, focus, slot, prefix, invalid}: the slot is the field's error line,
 * the control gets aria-invalid and aria-describedby (unless it is a group).
 */
class Errors {
  constructor(top, texts) {
    this.top = top;
    this.texts = texts;
    this.marked = [];
    this.slots = new Set();
    this.focusTargets = [];
  }

  clear() {
    replace(this.top);
    for (const slot of this.slots) replace(slot);
    this.slots.clear();
    for (const { control, describedby } of this.marked) {
      control.removeAttribute("aria-invalid");
      if (describedby) control.setAttribute("aria-describedby", describedby);
      else control.removeAttribute("aria-describedby");
    }
    this.marked = [];
    this.focusTargets = [];
  }

  atTop(...children) {
    this.top.append(h("p", {}, children));
  }

  beside(target, issue) {
    const { control, slot, prefix, invalid = true } = target;
    slot.append(h("span", { class: "issue" }, prefix ? `${prefix}: ${issue}` : issue));
    this.slots.add(slot);
    const focus = target.focus || control;
    if (focus) this.focusTargets.push(focus);
    if (control && !this.marked.some((m) => m.control === control)) {
      const describedby = control.getAttribute("aria-describedby");
      this.marked.push({ control, describedby });
      if (invalid) control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", [slot.id, describedby].filter(Boolean).join(" "));
    }
  }

  /** The first field with an issue, in the order the form shows them. */
  first() {
    const found = this.focusTargets.filter((el) => el.isConnected);
    found.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
    return found[0] || null;
  }
}

/** The loaded form: task name, kind, format, file name and the chosen kind's parameters. */
class Editor {
  constructor(kinds, texts) {
    this.kinds = kinds;
    this.texts = texts;
    this.sections = new Map(); // kind -> its parameters (kept, so switching back keeps what was typed)
    const top = h("div", { class: "form-error top", role: "alert", tabindex: "-1" });
    this.errors = new Errors(top, texts);

    this.taskName = h("input", { name: "task_name", required: true, maxlength: "200", autocomplete: "off" });
    this.kindSelect = h("select", { name: "kind", onchange: () => this.showKind() },
      kinds.map((k) => h("option", { value: k.kind }, k.title && k.title !== k.kind ? `${k.title} — ${k.kind}` : k.kind)));
    this.formatSelect = h("select", { name: "format", onchange: () => this.split.show(this.kind, this.formatSelect.value) });
    this.fileName = h("input", { name: "file_name", maxlength: "200", autocomplete: "off" });
    this.fields = {
      task_name: simpleField(texts, { label: texts.text("form.task_name"), control: this.taskName, required: true,
        hints: [texts.text("form.task_name_hint")] }),
      kind: simpleField(texts, { label: texts.text("form.kind"), control: this.kindSelect, hints: [] }),
      format: simpleField(texts, { label: texts.text("form.format"), control: this.formatSelect, hints: [] }),
      file_name: simpleField(texts, { label: texts.text("form.file_name"), control: this.fileName,
        hints: [texts.text("form.file_name_hint")] }),
    };
    this.split = new SplitSection(texts);
    this.paramsPlace = h("div", { class: "params-place" });
    this.node = h("div", { class: "export-fields" },
      top,
      h("p", { class: "note" }, texts.text("form.required_note")),
      h("div", { class: "main-fields" }, Object.values(this.fields).map((f) => f.node)),
      this.paramsPlace,
      this.split.node);
    this.showKind();
  }

  get kind() {
    return this.kinds.find((k) => k.kind === this.kindSelect.value) || this.kinds[0];
  }

  /** Show the chosen kind's formats and parameters (each kind's parameters are built once). */
  showKind() {
    const kind = this.kind;
    const previous = this.formatSelect.value;
    const formats = kind.formats || [];
    replace(this.formatSelect, formats.map((f) => h("option", { value: f }, f)));
    if (formats.includes(previous)) this.formatSelect.value = previous;
    this.formatSelect.disabled = formats.length < 2;
    this.split.show(kind, this.formatSelect.value);
    if (!this.sections.has(kind.kind)) this.sections.set(kind.kind, new ParamsSection(kind, this.texts));
    replace(this.paramsPlace, this.sections.get(kind.kind).node);
  }

  /** The POST /downloads body: empty optional fields left out, numbers as numbers. */
  request() {
    const body = { task_name: this.taskName.value, kind: this.kind.kind };
    if (this.formatSelect.value) body.format = this.formatSelect.value;
    if (this.fileName.value !== "") body.file_name = this.fileName.value;
    body.params = this.sections.get(this.kind.kind).group.value() || {};
    return { ...body, ...this.split.body() };
  }

  showError(err) {
    const errors = this.errors;
    errors.clear();
    errors.atTop(this.texts.text("form.not_created", { message: errorText(err) }));
    for (const detail of err.details || []) {
      const target = this.locate(String(detail.field || ""));
      if (target) errors.beside(target, String(detail.issue || ""));
      else errors.atTop(`${detail.field}: ${detail.issue}`);
    }
    const first = errors.first();
    (first || errors.top).focus();
  }

  /** Where an issue about `field` (task_name, params.rows, params.filters[0].op, …) goes. */
  locate(field) {
    const path = parsePath(field);
    if (!path || !path.length) return null;
    const [head, ...rest] = path;
    if (head === "params") return this.sections.get(this.kind.kind).locate(rest);
    if ((head === "parallelism" || head === "output") && !rest.length) return this.split.locate(head);
    const simple = this.fields[head];
    if (!simple || rest.length) return null;
    return { control: simple.control, slot: simple.slot };
  }
}

/** A kind's parameters: the schema's fields, its examples, its allowed sources. */
class ParamsSection {
  constructor(kind, texts) {
    const schema = kind.params_schema || {};
    const sources = kind.sources && Array.isArray(kind.sources.allowed) ? kind.sources : null;
    this.group = groupOf(schema, texts, { top: true, sources });
    this.slot = errorSlot();
    const examples = Array.isArray(schema.examples) ? schema.examples.filter((e) => e && typeof e === "object") : [];
    const legend = h("legend", {}, texts.text("form.params"), " ", h("code", {}, kind.kind));
    this.node = h("fieldset", { class: "params", "aria-describedby": this.slot.id },
      legend,
      examples.length ? h("div", { class: "examples" }, examples.map((example, i) => h("div", { class: "example" },
        h("button", {
          type: "button",
          onclick: () => this.group.set(example),
        }, texts.text(examples.length > 1 ? "form.use_example_n" : "form.use_example", { n: i + 1 })),
        h("code", { class: "example-json" }, JSON.stringify(example))))) : null,
      this.slot,
      this.group.fields.length ? this.group.node : h("p", { class: "hint" }, texts.text("form.no_params")));
  }

  locate(rest) {
    const target = this.group.locate(rest);
    // an issue about the parameters as a whole goes under the legend, not into the first field
    return target.slot === this.group.slot ? { ...target, slot: this.slot } : target;
  }
}

// -- fields, from JSON Schema -----------------------------------------------

/** Which control a schema gets. */
function fieldKind(schema) {
  if (!schema || typeof schema !== "object") return "json";
  if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
  const types = typesOf(schema);
  if (types.length !== 1) return "json";
  const [type] = types;
  if (type === "string") return "text";
  if (type === "integer" || type === "number") return "number";
  if (type === "boolean") return "boolean";
  if (type === "array") {
    const items = schema.items || {};
    const itemKind = fieldKind(items);
    if (itemKind === "group") return "rows";
    if (itemKind === "text" || itemKind === "number") return "lines";
    return "json";
  }
  if (type === "object") {
    if (schema.properties && Object.keys(schema.properties).length) return "group";
    if (schema.additionalProperties && typeof schema.additionalProperties === "object") return "map";
    return "json";
  }
  return "json";
}

function typesOf(schema) {
  if (Array.isArray(schema.type)) return schema.type;
  return schema.type ? [schema.type] : [];
}

/**
 * One field. opts: {required (marked *), native (the browser checks it too), sources, inRow}.
 * Every field is {node, controls(), value(), set(v), locate(rest)}; value() is
 * undefined for an empty field, which the request leaves out.
 */
function build(name, schema, texts, opts) {
  switch (fieldKind(schema)) {
    case "text": return textField(name, schema, texts, opts);
    case "number": return numberField(name, schema, texts, opts);
    case "boolean": return booleanField(name, schema, texts, opts);
    case "enum": return enumField(name, schema, texts, opts);
    case "lines": return linesField(name, schema, texts, opts);
    case "rows": return rowsField(name, schema, texts, opts);
    case "map": return mapField(name, schema, texts, opts);
    case "group": return nestedField(name, schema, texts, opts);
    default: return jsonField(name, schema, texts, opts);
  }
}

function errorSlot() {
  return h("p", { class: "field-error", id: uid("err") });
}

/** The schema's own words (description or title) and what its keywords say, as hint text. */
function schemaHints(name, schema, texts) {
  const hints = [];
  const words = schema.description || schema.title;
  if (words) hints.push(String(words));
  const min = schema.minimum;
  const max = schema.maximum;
  if (min !== undefined && max !== undefined) hints.push(texts.text("hint.range", { min: formatNumber(min), max: formatNumber(max) }));
  else if (min !== undefined) hints.push(texts.text("hint.min", { min: formatNumber(min) }));
  else if (max !== undefined) hints.push(texts.text("hint.max", { max: formatNumber(max) }));
  if (schema["x-pattern-issue"]) hints.push(`${name} ${schema["x-pattern-issue"]}.`);
  if (schema.default !== undefined && !Array.isArray(schema.enum)) {
    hints.push(texts.text("hint.default", { value: typeof schema.default === "string" ? schema.default : JSON.stringify(schema.default) }));
  }
  return hints;
}

function requiredMark() {
  // screen readers hear "required" from the control's required / aria-required
  return h("span", { class: "req", "aria-hidden": "true" }, "*");
}

/** A label, one control, its hint and its error line. */
function simpleField(texts, { label, control, required = false, native = true, hints = [], extra = null, cls = "" }) {
  control.id = control.id || uid("field");
  const slot = errorSlot();
  let hint = null;
  if (hints.length) {
    hint = h("p", { class: "hint", id: uid("hint") }, hints.flatMap((part, i) => (i ? [" ", part] : [part])));
    control.setAttribute("aria-describedby", hint.id);
  }
  if (required) {
    if (native) control.required = true;
    else control.setAttribute("aria-required", "true");
  }
  const node = h("div", { class: `field ${cls}`.trim() },
    // the * stays outside the label: the field's name is the property's name, exactly
    required ? h("div", { class: "label-line" }, h("label", { for: control.id }, label), requiredMark())
      : h("label", { for: control.id }, label),
    control, extra, hint, slot);
  return { node, control, slot };
}

/** The common shape of a one-control field. */
function single(name, schema, texts, opts, control, { read, write, extraHints = [], extra = null, cls = "" }) {
  const f = simpleField(texts, {
    label: opts.label || name, control, required: opts.required, native: opts.native,
    hints: [...schemaHints(name, schema, texts), ...extraHints], extra, cls,
  });
  return {
    node: f.node,
    controls: () => [control],
    value: read,
    set: write,
    locate: (rest) => ({ control, slot: f.slot, prefix: formatPath(rest) }),
  };
}

function textField(name, schema, texts, opts) {
  const input = h("input", { type: "text", name, autocomplete: "off", spellcheck: "false",
    maxlength: schema.maxLength !== undefined ? String(schema.maxLength) : null });
  const extraHints = [];
  let extra = null;
  const allowed = opts.sources && opts.sources.param === name ? opts.sources.allowed : null;
  if (allowed && allowed.length) {
    extra = h("datalist", { id: uid("allowed") }, allowed.map((v) => h("option", { value: String(v) })));
    input.setAttribute("list", extra.id);
    extraHints.push(texts.text("hint.allowed", { list: allowed.join(", ") }));
  }
  return single(name, schema, texts, opts, input, {
    read: () => (input.value === "" ? undefined : input.value),
    write: (v) => { input.value = v === undefined || v === null ? "" : String(v); },
    extraHints, extra,
  });
}

function numberField(name, schema, texts, opts) {
  const integer = typesOf(schema).includes("integer");
  const input = h("input", {
    type: "number", name, step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal",
    min: schema.minimum !== undefined ? String(schema.minimum) : null,
    max: schema.maximum !== undefined ? String(schema.maximum) : null,
  });
  return single(name, schema, texts, opts, input, {
    read: () => (input.value === "" ? undefined : Number(input.value)),
    write: (v) => { input.value = v === undefined || v === null ? "" : String(v); },
  });
}

/**
 * A checkbox with a third state, "not set" (shown as indeterminate): a boolean
 * left alone is left out, so the kind's own default applies (escape_formulas
 * defaults to true, which an unticked box would otherwise turn off).
 */
function booleanField(name, schema, texts, opts) {
  let state;
  const input = h("input", { type: "checkbox", name });
  const stateText = h("span", { class: "bool-state" }, texts.text("bool.unset"));
  const reset = h("button", { type: "button", class: "link", onclick: () => { show(undefined); input.focus(); } },
    texts.text("bool.reset"));
  texts.attr(reset, "aria-label", "bool.reset_label", { name });
  function show(value) {
    state = value;
    input.indeterminate = value === undefined;
    input.checked = value === true;
    stateText.hidden = value !== undefined;
    reset.hidden = value === undefined;
  }
  input.addEventListener("change", () => show(input.checked));
  show(undefined);
  const f = simpleField(texts, { label: opts.label || name, control: input, hints: schemaHints(name, schema, texts), cls: "check" });
  // the box before its label, the state after it
  const label = f.node.querySelector("label");
  const line = f.node.querySelector(".label-line");
  if (line) line.remove();
  f.node.prepend(h("div", { class: "check-line" }, input, label, stateText, reset));
  return {
    node: f.node,
    controls: () => [input],
    value: () => state,
    set: (v) => show(typeof v === "boolean" ? v : undefined),
    locate: (rest) => ({ control: input, slot: f.slot, prefix: formatPath(rest) }),
  };
}

function enumField(name, schema, texts, opts) {
  const values = schema.enum;
  const shown = (v) => (typeof v === "string" ? v : JSON.stringify(v));
  let empty;
  if (opts.required && opts.native) empty = h("option", { value: "" }, texts.text("enum.choose"));
  else if (schema.default !== undefined) empty = h("option", { value: "" }, texts.text("enum.default", { value: shown(schema.default) }));
  else empty = h("option", { value: "" }, texts.text(opts.required ? "enum.choose" : "enum.unset"));
  const select = h("select", { name }, empty, values.map((v, i) => h("option", { value: String(i) }, shown(v))));
  return single(name, schema, texts, opts, select, {
    read: () => (select.value === "" ? undefined : values[Number(select.value)]),
    write: (v) => {
      const i = values.findIndex((x) => JSON.stringify(x) === JSON.stringify(v));
      select.value = i < 0 ? "" : String(i);
    },
  });
}

/** An array of strings (or numbers): one item per line; blank lines are skipped, lines kept as typed. */
function linesField(name, schema, texts, opts) {
  const numbers = fieldKind(schema.items || {}) === "number";
  const area = h("textarea", { name, rows: "3", spellcheck: "false" });
  const items = () => area.value.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line.trim() !== "");
  const field = single(name, schema, texts, opts, area, {
    read: () => {
      const lines = items();
      if (!lines.length) return undefined;
      return numbers ? lines.map((line) => (Number.isNaN(Number(line)) ? line : Number(line))) : lines;
    },
    write: (v) => { area.value = Array.isArray(v) ? v.map(String).join("\n") : ""; },
    extraHints: [texts.text("hint.lines")],
  });
  const locate = field.locate;
  field.locate = (rest) => {
    if (typeof rest[0] === "number") {
      return { ...locate(rest.slice(1)), prefix: [t("issue.item", { n: rest[0] + 1 }), formatPath(rest.slice(1))].filter(Boolean).join(" ") };
    }
    return locate(rest);
  };
  return field;
}

/** JSON when the text parses as JSON, the text itself otherwise (a filter's value: 42, true, ["a","b"], abc). */
function jsonField(name, schema, texts, opts) {
  const types = typesOf(schema);
  const structured = types.length > 0 && types.every((x) => x === "object" || x === "array");
  const control = structured ? h("textarea", { name, rows: "3", spellcheck: "false" })
    : h("input", { type: "text", name, autocomplete: "off", spellcheck: "false" });
  return single(name, schema, texts, opts, control, {
    read: () => {
      if (control.value === "") return undefined;
      try { return JSON.parse(control.value); } catch { return control.value; }
    },
    write: (v) => {
      if (v === undefined) control.value = "";
      else if (typeof v === "string") control.value = parsesAsJson(v) ? JSON.stringify(v) : v;
      else control.value = JSON.stringify(v);
    },
    extraHints: [texts.text("hint.json")],
  });
}

function parsesAsJson(text) {
  try { JSON.parse(text); return true; } catch { return false; }
}

/** An object's properties as fields (the parameters themselves, a filter row, a nested object). */
function groupOf(schema, texts, { top = false, sources = null, inRow = false } = {}) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = Object.entries(schema.properties || {}).map(([name, sub]) => [name, build(name, sub, texts, {
    required: required.has(name), native: top, sources: top ? sources : null, inRow,
  })]);
  const byName = new Map(fields);
  const slot = errorSlot();
  const controls = () => fields.flatMap(([, f]) => f.controls());
  return {
    fields,
    slot,
    node: h("div", { class: inRow ? "row-fields" : "group-fields" }, fields.map(([, f]) => f.node)),
    controls,
    value() {
      const out = {};
      for (const [name, f] of fields) {
        const v = f.value();
        if (v !== undefined) out[name] = v;
      }
      return Object.keys(out).length ? out : undefined;
    },
    set(obj) {
      for (const [name, f] of fields) f.set(obj && typeof obj === "object" ? obj[name] : undefined);
    },
    locate(rest) {
      if (typeof rest[0] === "string" && byName.has(rest[0])) return byName.get(rest[0]).locate(rest.slice(1));
      return { control: null, focus: controls()[0] || null, slot, prefix: formatPath(rest), invalid: false };
    },
  };
}

/** A fieldset around fields: a nested object, or a repeatable list's frame. */
function frame(name, schema, texts, opts, content, slot) {
  const hints = schemaHints(name, schema, texts);
  const hint = hints.length ? h("p", { class: "hint", id: uid("hint") }, hints.flatMap((p, i) => (i ? [" ", p] : [p]))) : null;
  const legend = h("legend", {}, name, opts.required ? [" ", requiredMark()] : null);
  const node = h("fieldset", {
    class: "field sub", "aria-describedby": [slot.id, hint && hint.id].filter(Boolean).join(" "),
  }, legend, hint, slot, content);
  return node;
}

function nestedField(name, schema, texts, opts) {
  const group = groupOf(schema, texts, {});
  const node = frame(name, schema, texts, opts, group.node, group.slot);
  return { node, controls: group.controls, value: () => group.value(), set: (v) => group.set(v), locate: (rest) => group.locate(rest) };
}

/**
 * Rows of sub-fields added and removed by buttons: an array of objects
 * (dynamodb_table's filters: attr, op, value) or an object of named values
 * (headers: key, value). A row left empty is left out.
 */
function repeatable(name, schema, texts, opts, makeRow) {
  const rows = [];
  let sent = []; // the rows the last request sent, in order: params.filters[i] is sent[i]
  const slot = errorSlot();
  const list = h("div", { class: "rows" });
  const add = h("button", { type: "button", class: "add", onclick: () => { const row = addRow(); row.controls()[0].focus(); } },
    texts.text("rows.add"));
  texts.attr(add, "aria-label", "rows.add_label", { name });

  function renumber() {
    rows.forEach((row, i) => {
      row.legend.textContent = `${name} #${i + 1}`;
      texts.attr(row.remove, "aria-label", "rows.remove_label", { name, n: i + 1 });
    });
  }

  function addRow(value) {
    const row = makeRow();
    row.legend = h("legend", {});
    row.remove = h("button", { type: "button", class: "remove" }, texts.text("rows.remove"));
    row.node = h("fieldset", { class: "row" }, row.legend, row.content, row.remove);
    row.remove.addEventListener("click", () => {
      const at = rows.indexOf(row);
      rows.splice(at, 1);
      row.node.remove();
      renumber();
      const next = rows[at] || rows[at - 1];
      (next ? next.controls()[0] : add).focus();
    });
    rows.push(row);
    list.append(row.node);
    renumber();
    if (value !== undefined) row.set(value);
    return row;
  }

  function clear() {
    rows.splice(0).forEach((row) => row.node.remove());
  }

  return {
    node: frame(name, schema, texts, opts, [list, add], slot),
    rows,
    addRow,
    clear,
    controls: () => [...rows.flatMap((r) => r.controls()), add],
    sentRows: () => sent,
    remember: (r) => { sent = r; },
    slot,
    add,
  };
}

function rowsField(name, schema, texts, opts) {
  const itemSchema = schema.items;
  const base = repeatable(name, schema, texts, opts, () => {
    const group = groupOf(itemSchema, texts, { inRow: true });
    // the row's own error line (an issue about the row as a whole) above its fields
    return { group, content: [group.slot, group.node], controls: group.controls, value: () => group.value(), set: (v) => group.set(v) };
  });
  return {
    node: base.node,
    controls: base.controls,
    value() {
      const used = base.rows.map((row) => [row, row.value()]).filter(([, v]) => v !== undefined);
      base.remember(used.map(([row]) => row));
      return used.length ? used.map(([, v]) => v) : undefined;
    },
    set(v) {
      base.clear();
      if (Array.isArray(v)) v.forEach((item) => base.addRow(item));
    },
    locate(rest) {
      const row = typeof rest[0] === "number" ? base.sentRows()[rest[0]] : null;
      if (row) return row.group.locate(rest.slice(1));
      return { control: null, focus: base.controls()[0], slot: base.slot, prefix: formatPath(rest), invalid: false };
    },
  };
}

function mapField(name, schema, texts, opts) {
  const valueSchema = schema.additionalProperties;
  const base = repeatable(name, schema, texts, opts, () => {
    const key = build("key", { type: "string" }, texts, { label: texts.text("map.key") });
    const value = build("value", valueSchema, texts, { label: texts.text("map.value") });
    return {
      key,
      value,
      content: h("div", { class: "row-fields" }, key.node, value.node),
      controls: () => [...key.controls(), ...value.controls()],
      set: ([k, v]) => { key.set(k); value.set(v); },
    };
  });
  return {
    node: base.node,
    controls: base.controls,
    value() {
      const out = {};
      for (const row of base.rows) {
        const k = row.key.value();
        const v = row.value.value();
        if (k === undefined && v === undefined) continue;
        out[k ?? ""] = v ?? "";
      }
      return Object.keys(out).length ? out : undefined;
    },
    set(v) {
      base.clear();
      if (v && typeof v === "object" && !Array.isArray(v)) Object.entries(v).forEach((entry) => base.addRow(entry));
    },
    locate(rest) {
      const row = rest.length ? base.rows.find((r) => (r.key.value() ?? "") === String(rest[0])) : null;
      if (row) return row.value.locate(rest.slice(1));
      return { control: null, focus: base.controls()[0], slot: base.slot, prefix: formatPath(rest), invalid: false };
    },
  };
}

// -- the API's field paths --------------------------------------------------

/**
 * "params.filters[0].op" -> ["params", "filters", 0, "op"];
 * 'params.headers["a b"]' -> ["params", "headers", "a b"]; null when it does not parse.
 */
export function parsePath(field) {
  const out = [];
  let rest = field;
  let first = true;
  while (rest) {
    let m;
    if ((m = (first ? /^([^.[\]]+)/ : /^\.([^.[\]]+)/).exec(rest))) out.push(m[1]);
    else if ((m = /^\[(\d+)\]/.exec(rest))) out.push(Number(m[1]));
    else if ((m = /^\[("(?:[^"\\]|\\.)*")\]/.exec(rest))) {
      try { out.push(JSON.parse(m[1])); } catch { return null; }
    } else return null;
    rest = rest.slice(m[0].length);
    first = false;
  }
  return out;
}

function formatPath(segments) {
  return segments.map((s, i) => {
    if (typeof s === "number") return `[${s}]`;
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(s) ? `${i ? "." : ""}${s}` : `[${JSON.stringify(s)}]`;
  }).join("");
}
