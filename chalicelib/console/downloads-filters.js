// The filters above the list: name, status, kind, created from/to, and for
// admins the owner (picked by name, sent as a user ID) and for the
// administrator the tenant. A pick reloads at once; typing waits for a pause,
// so a name typed letter by letter is one request, not one per letter.

import { captureFocus, restoreFocus } from "./downloads-focus.js";
import { EMPTY_FILTERS, STATUSES, kindsOffered, ownersOffered, seesOthers } from "./downloads-model.js";
import { h, uid } from "./dom.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  en: {
    "filter.label": "Filter downloads",
    "filter.status": "Status",
    "filter.status_all": "All statuses",
    "filter.status_active": "Active",
    "filter.kind": "Kind",
    "filter.kind_all": "All kinds",
    "filter.name": "Name contains",
    "filter.from": "Created from",
    "filter.to": "Created to",
    "filter.owner": "Owner",
    "filter.owner_hint": "a user name from the list, or a user ID",
    "filter.tenant": "Tenant",
    "filter.clear": "Clear filters",
    "refresh": "Refresh",
  },
  zh: {
    "filter.label": "筛选下载",
    "filter.status": "状态",
    "filter.status_all": "全部状态",
    "filter.status_active": "进行中",
    "filter.kind": "类型",
    "filter.kind_all": "全部类型",
    "filter.name": "名称包含",
    "filter.from": "创建日期从",
    "filter.to": "创建日期到",
    "filter.owner": "所有者",
    "filter.owner_hint": "列表中的用户名，或用户 ID",
    "filter.tenant": "租户",
    "filter.clear": "清除筛选",
    "refresh": "刷新",
  },
});

const TYPING_DELAY_MS = 350;

/**
 * The filters bar of one mounted list: {form(), redraw(), stop()}. form() builds it from
 * model.filters (on each full redraw); redraw() replaces the shown one, keeping focus (when the
 * kinds arrive); stop() drops a reload still waiting for the typing to pause.
 * hooks: {container, model, user, findRow(id), load()}: load() reloads the first page.
 */
export function createFilters({ container, model, user, findRow, load }) {
  let typingTimer = null;

  function form() {
    const f = model.filters;
    const field = (key, label, control, extra = null) => h("div", { class: `dl-field f-${key}` },
      h("label", { for: control.id }, label), control, extra);
    const onSelect = (key) => (event) => { model.filters[key] = event.target.value; load(); };
    const onType = (key) => (event) => {
      model.filters[key] = event.target.value;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => load(), TYPING_DELAY_MS);
    };
    const status = h("select", { id: uid("f-status"), "data-key": "f-status", onchange: onSelect("status") },
      h("option", { value: "", selected: !f.status }, t("filter.status_all")),
      h("option", { value: "active", selected: f.status === "active" }, t("filter.status_active")),
      STATUSES.map((s) => h("option", { value: s, selected: f.status === s }, t(`status.${s}`))));
    const kind = h("select", { id: uid("f-kind"), "data-key": "f-kind", onchange: onSelect("kind") },
      h("option", { value: "", selected: !f.kind }, t("filter.kind_all")),
      kindsOffered(model).map((k) => h("option", { value: k, selected: f.kind === k }, k)));
    const name = h("input", { id: uid("f-name"), "data-key": "f-name", type: "search", value: f.name,
      autocomplete: "off", spellcheck: "false", oninput: onType("name") });
    const from = h("input", { id: uid("f-from"), "data-key": "f-from", type: "date", value: f.from,
      onchange: onSelect("from") });
    const to = h("input", { id: uid("f-to"), "data-key": "f-to", type: "date", value: f.to,
      onchange: onSelect("to") });
    const fields = [
      field("name", t("filter.name"), name),
      field("status", t("filter.status"), status),
      field("kind", t("filter.kind"), kind),
      field("from", t("filter.from"), from),
      field("to", t("filter.to"), to),
    ];
    if (seesOthers(user)) {
      const listId = uid("owners");
      const hintId = uid("owner-hint");
      const owner = h("input", { id: uid("f-owner"), "data-key": "f-owner", value: f.owner, list: listId,
        autocomplete: "off", spellcheck: "false", "aria-describedby": hintId, oninput: onType("owner") });
      fields.push(field("owner", t("filter.owner"), owner,
        [h("datalist", { id: listId }, ownersOffered(model).map((n) => h("option", { value: n }))),
          h("span", { id: hintId, class: "dl-hint" }, t("filter.owner_hint"))]));
    }
    if (user.isAdmin) {
      const tenant = h("input", { id: uid("f-tenant"), "data-key": "f-tenant", value: f.tenant,
        autocomplete: "off", spellcheck: "false", oninput: onType("tenant") });
      fields.push(field("tenant", t("filter.tenant"), tenant));
    }
    const bar = h("form", { class: "dl-filters", role: "search", "aria-label": t("filter.label") },
      fields,
      h("div", { class: "dl-filter-buttons" },
        h("button", { type: "button", "data-key": "f-clear", onclick: clear }, t("filter.clear")),
        h("button", { type: "button", "data-key": "refresh", onclick: () => load() }, t("refresh"))));
    bar.addEventListener("submit", (event) => {
      event.preventDefault(); // Enter in the name field: search now
      clearTimeout(typingTimer);
      load();
    });
    return bar;
  }

  function redraw() {
    const focus = captureFocus(container);
    container.querySelector(".dl-filters").replaceWith(form());
    restoreFocus(container, focus, findRow);
  }

  function clear() {
    clearTimeout(typingTimer);
    model.filters = { ...EMPTY_FILTERS };
    redraw();
    load();
  }

  return {
    form,
    redraw,
    stop() {
      clearTimeout(typingTimer);
    },
  };
}
