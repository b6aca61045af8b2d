// English and Simplified Chinese. Each module adds its own strings
// (addStrings); t() looks a key up in the current language, then in English.
// The language comes from the browser unless the person picked one, which is
// remembered. Names people typed are data, never looked up here.

export const LANGUAGES = { en: "English", zh: "中文" };
const STORAGE_KEY = "download-center.lang";
const strings = { en: {}, zh: {} };
const listeners = new Set();
let current = detect();

function detect() {
  let stored = null;
  try { stored = localStorage.getItem(STORAGE_KEY); } catch { /* storage blocked */ }
  if (stored && stored in LANGUAGES) return stored;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of preferred) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in LANGUAGES) return base;
  }
  return "en";
}

export function addStrings(table) {
  for (const lang of Object.keys(LANGUAGES)) Object.assign(strings[lang], table[lang] || {});
}

export function lang() {
  return current;
}

export function setLang(next) {
  if (!(next in LANGUAGES) || next === current) return;
  current = next;
  try { localStorage.setItem(STORAGE_KEY, next); } catch { /* storage blocked */ }
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
  for (const fn of listeners) fn(next);
}

/** Call fn(lang) whenever the language changes; returns the way to stop. */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** t("greeting", {name: "alice"}) -> "Signed in as alice"; an unknown key shows as itself. */
export function t(key, vars = {}) {
  const template = strings[current][key] ?? strings.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match));
}

/** Bytes in human units (1024-based, as file sizes are shown), in the page's language. */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

export function formatNumber(n) {
  return new Intl.NumberFormat(locale()).format(n);
}

/** A timestamp in the browser's time zone. */
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "medium" }).format(date);
}

export function locale() {
  return current === "zh" ? "zh-CN" : "en";
}

document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
