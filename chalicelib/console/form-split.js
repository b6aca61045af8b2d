// The "New export" form's segmented build: how many segments build the export
// side by side (`parallelism`: auto, or 1 to the kind's split.max_segments) and
// what it becomes (`output`: one file, or parts: one file per segment and a
// manifest.json). Shown only for a kind and format that can split (GET /kinds'
// `split.outputs[format]`); sent only when changed from the defaults (auto,
// single), so a form left alone asks exactly what it asked before.

import { h, uid } from "./dom.js";
import { addStrings, formatNumber } from "./i18n.js";

export const AUTO = "auto";
export const SINGLE = "single";
export const PARTS = "parts";

addStrings({
  en: {
    "split.legend": "Segmented build",
    "split.parallelism": "Parallelism",
    "split.auto": "auto",
    "split.parallelism_hint": "Segments built side by side, up to {max}. Auto: as many as the export's size needs (a small one stays whole).",
    "split.parts_only": "{format} files split only into parts: choose Parts for more than one segment.",
    "split.output": "Output",
    "split.single": "One file",
    "split.single_hint": "the segments joined, as one worker would build it",
    "split.single_one": "built by one worker",
    "split.parts": "Parts",
    "split.parts_hint": "one file per segment, and a manifest.json with their checksums",
  },
  zh: {
    "split.legend": "分段构建",
    "split.parallelism": "并行度",
    "split.auto": "自动",
    "split.parallelism_hint": "同时构建的分段数，最多 {max} 个。自动：按导出的大小决定（小的导出不分段）。",
    "split.parts_only": "{format} 文件只能分成多个文件：要多于一个分段，请选择“分片”。",
    "split.output": "输出",
    "split.single": "单个文件",
    "split.single_hint": "各分段合并成一个文件，与单个构建的结果相同",
    "split.single_one": "由单个构建完成",
    "split.parts": "分片",
    "split.parts_hint": "每个分段一个文件，另附列出校验和的 manifest.json",
  },
});

/**
 * The section. texts: the form's Texts (text that follows the language). Its node is hidden
 * while the kind or format cannot split; show(kind, format) says which; body() is what the
 * create body gets from it; locate("parallelism" | "output") where an API issue about it goes.
 */
export class SplitSection {
  constructor(texts) {
    this.texts = texts;
    this.outputs = [];
    this.parallelism = h("select", { name: "parallelism", id: uid("field"), onchange: () => this.sync() });
    this.parallelismHint = h("p", { class: "hint", id: uid("hint") }, texts.text("split.parallelism_hint", { max: "" }));
    this.partsOnly = h("p", { class: "hint split-note", id: uid("hint"), hidden: true }, texts.text("split.parts_only"));
    this.parallelism.setAttribute("aria-describedby", `${this.parallelismHint.id} ${this.partsOnly.id}`);
    this.parallelismSlot = h("p", { class: "field-error", id: uid("err") });

    const radio = (value) => h("input", { type: "radio", name: "output", value, id: uid("field"),
      checked: value === SINGLE, onchange: () => this.sync() });
    this.single = radio(SINGLE);
    this.parts = radio(PARTS);
    this.singleHint = texts.text("split.single_hint");
    this.outputSlot = h("p", { class: "field-error", id: uid("err") });
    const choice = (input, label, hint) => h("div", { class: "split-choice" },
      input,
      h("label", { for: input.id }, h("span", { class: "split-choice-name" }, label),
        h("span", { class: "split-choice-hint" }, hint)));
    this.outputGroup = h("fieldset", { class: "field split-output", "aria-describedby": this.outputSlot.id },
      h("legend", {}, texts.text("split.output")),
      choice(this.single, texts.text("split.single"), this.singleHint),
      choice(this.parts, texts.text("split.parts"), texts.text("split.parts_hint")),
      this.outputSlot);

    this.node = h("fieldset", { class: "split", hidden: true },
      h("legend", {}, texts.text("split.legend")),
      h("div", { class: "split-fields" },
        h("div", { class: "field split-parallelism" },
          h("label", { for: this.parallelism.id }, texts.text("split.parallelism")),
          this.parallelism, this.parallelismHint, this.partsOnly, this.parallelismSlot),
        this.outputGroup));
  }

  /** Offer what `kind` can do for `format`: nothing (hidden), or its outputs and segments. */
  show(kind, format) {
    const split = kind && kind.split;
    const outputs = split && split.outputs && Array.isArray(split.outputs[format]) ? split.outputs[format] : [];
    this.outputs = outputs;
    this.node.hidden = outputs.length === 0;
    if (!outputs.length) return;
    const max = Math.max(1, Number(split.max_segments) || 1);
    const previous = this.parallelism.value || AUTO;
    if (this.parallelism.options.length !== max + 1) {
      this.parallelism.replaceChildren(
        h("option", { value: AUTO }, this.texts.text("split.auto")),
        ...Array.from({ length: max }, (_, i) => h("option", { value: String(i + 1) }, formatNumber(i + 1))));
    }
    this.parallelism.value = previous === AUTO || Number(previous) <= max ? previous : AUTO;
    this.texts.set(this.parallelismHint.firstChild, "split.parallelism_hint", { max: formatNumber(max) });
    this.texts.set(this.partsOnly.firstChild, "split.parts_only", { format });
    this.texts.set(this.singleHint, outputs.includes(SINGLE) ? "split.single_hint" : "split.single_one");
    this.sync();
  }

  get output() {
    return this.parts.checked ? PARTS : SINGLE;
  }

  /**
   * A format that is split only into parts (xlsx) is one worker's as one file: more segments
   * than one are offered with Parts only (the API would refuse them: 400 on parallelism).
   */
  sync() {
    const onlyParts = this.outputs.length > 0 && !this.outputs.includes(SINGLE);
    const limited = onlyParts && this.output === SINGLE;
    for (const option of this.parallelism.options) option.disabled = limited && option.value !== AUTO && option.value !== "1";
    if (limited && this.parallelism.value !== AUTO && this.parallelism.value !== "1") this.parallelism.value = AUTO;
    this.partsOnly.hidden = !onlyParts;
  }

  /** What the create body gets: only what differs from the defaults, and only when offered. */
  body() {
    if (this.node.hidden) return {};
    const out = {};
    if (this.parallelism.value !== AUTO) out.parallelism = Number(this.parallelism.value);
    if (this.output !== SINGLE) out.output = this.output;
    return out;
  }

  /** Where the API's issue about `field` goes (the Errors target of form.js). */
  locate(field) {
    if (field === "parallelism") return { control: this.parallelism, slot: this.parallelismSlot };
    if (field === "output") {
      return { control: null, focus: this.parts.checked ? this.parts : this.single, slot: this.outputSlot, invalid: false };
    }
    return null;
  }
}
