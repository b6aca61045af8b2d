"""The downloads list's rules (chalicelib/console/downloads-model.js), in Chromium.

The model module has no DOM, timers or requests, so its rules can be asked
directly: the module the page is served is imported into the page and called.
These are the rules the end-to-end tests cannot time on purpose: an answer that
arrives after a newer one (a poll overtaken by a cancel, a listing overtaken by
a task just created), and which finish is news once per attempt.
"""

from __future__ import annotations

from typing import Any

#: the served model module, and a task maker: T(id, status, {more fields})
PRELUDE = """
const src = document.querySelector('script[type="module"]').src;
const m = await import(new URL("downloads-model.js", src).href);
const T = (id, status, extra = {}) => ({
  id, status, task_name: `task ${id}`, kind: "demo", format: "csv", owner: "sub-alice", owner_name: "alice",
  tenant: "acme", attempts: 1, created_at: "2026-01-01T00:00:00Z", ...extra,
});
"""


def run(page: Any, body: str) -> Any:
    """Run `body` (JavaScript that returns a JSON-able value) with the model module as `m`."""
    return page.evaluate(f"async () => {{ {PRELUDE} {body} }}")


def test_an_answer_older_than_what_is_shown_is_dropped(new_page: Any) -> None:
    page = new_page()
    assert run(page, """
        const model = m.createModel();
        m.addFresh(model, T("01B", "queued"), 100);           // shown from a request sent at 100
        const late = m.acceptAnswer(model, T("01B", "running"), 50);  // a poll sent before it
        const shownAfterLate = model.tasks.get("01B").status;
        const prev = m.acceptAnswer(model, T("01B", "canceling"), 150);
        const unknown = m.acceptAnswer(model, T("01Z", "running"), 200);  // not shown: not taken
        return [late, shownAfterLate, prev.status, model.tasks.get("01B").status, unknown, model.order];
    """) == [None, "queued", "queued", "canceling", None, ["01B"]]


def test_a_first_page_replaces_the_rows_but_not_newer_news(new_page: Any) -> None:
    page = new_page()
    result = run(page, """
        const model = m.createModel();
        model.loadSeq = 1;
        m.mergePage(model, { items: [T("01A", "running"), T("01C", "queued")], next_cursor: "c1" },
                    { seq: 1, sent: 10, more: false });
        m.addFresh(model, T("01E", "queued"), 15);  // created before listing 2 was asked: it answers for it
        model.loadSeq = 2;                          // listing 2 asked at 20; while it is on its way:
        m.addFresh(model, T("01D", "queued"), 25);  // a task created here
        m.acceptAnswer(model, T("01A", "canceling"), 30);  // a cancel answered
        const changes = m.mergePage(model, { items: [T("01A", "running"), T("01C", "succeeded")] },
                                    { seq: 2, sent: 20, more: false });
        const afterFirst = {
            order: [...model.order],
            statuses: model.order.map((id) => model.tasks.get(id).status),
            fresh: [...model.fresh.keys()],
            cursor: model.nextCursor,
            changes: changes.map(([prev, task]) => [task.id, prev.status, task.status]),
        };
        m.mergePage(model, { items: [T("009", "failed")], next_cursor: null },
                    { seq: 3, sent: 40, more: true });
        return { afterFirst, afterMore: model.order };
    """)
    assert result["afterFirst"] == {
        "order": ["01D", "01C", "01A"],  # newest first; 01E is not in the page asked after it
        "statuses": ["queued", "succeeded", "canceling"],  # the cancel's answer is newer than the page
        "fresh": ["01D"],
        "cursor": None,
        "changes": [["01C", "queued", "succeeded"]],  # a finish to tell; 01A's older state is not news
    }
    assert result["afterMore"] == ["01D", "01C", "01A", "009"]  # Load more adds below


def test_a_failed_first_page_leaves_no_rows_of_other_filters(new_page: Any) -> None:
    page = new_page()
    assert run(page, """
        const model = m.createModel();
        m.mergePage(model, { items: [T("01A", "running")], next_cursor: "c1" },
                    { seq: 1, sent: 1, more: false });
        m.failLoad(model, { code: "network", message: "offline" }, true);  // Load more failed: rows stay
        const afterMore = [model.order.length, model.nextCursor];
        m.failLoad(model, { code: "network", message: "offline" }, false);
        return [afterMore, model.order.length, model.nextCursor, model.loadError.message];
    """) == [[1, "c1"], 0, None, "offline"]


def test_a_finish_is_news_once_per_attempt_and_only_to_its_owner(new_page: Any) -> None:
    page = new_page()
    assert run(page, """
        const key = (from, to, extra = {}) => m.finishKey(T("01A", from), T("01A", to, extra), "alice");
        return [
            key("running", "succeeded"),
            key("queued", "failed", { attempts: 2 }),  // the retry's finish is news again
            key("canceling", "succeeded"),
            key("running", "canceled"),                // canceled by the person: not news
            key("succeeded", "succeeded"),             // an answer repeating a finish
            key("running", "succeeded", { owner_name: "carol" }),  // an admin sees carol's: hers to be told
        ];
    """) == ["01A#1", "01A#2", "01A#1", None, None, None]


def test_the_filters_become_the_listing_query(new_page: Any) -> None:
    page = new_page()
    result = run(page, """
        const model = m.createModel();
        m.putTask(model, T("01A", "succeeded", { owner: "sub-carol", owner_name: "carol" }));
        Object.assign(model.filters, { status: "active", kind: "demo", name: "  march ", from: "2026-01-02",
                                       to: "2026-01-03", owner: "carol", tenant: " acme " });
        const admin = m.listQuery(model, { isAdmin: true });
        const tenantAdmin = m.listQuery(model, { isTenantAdmin: true });
        const person = m.listQuery(model, {});
        model.filters.owner = "sub-unknown";  // not a name shown: taken as a user ID
        const byId = m.listQuery(model, { isAdmin: true }).owner;
        return { admin, tenantAdmin, person, byId,
                 from: new Date(2026, 0, 2).toISOString(),
                 to: new Date(2026, 0, 3, 23, 59, 59, 999).toISOString(),
                 filtered: m.isFiltered(model.filters),
                 empty: m.isFiltered({ ...m.EMPTY_FILTERS, name: "  " }) };
    """)
    common = {"limit": 20, "status": "queued,running,canceling", "kind": "demo", "task_name": "march",
              "created_after": result["from"], "created_before": result["to"]}
    assert result["admin"] == {**common, "owner": "sub-carol", "tenant": "acme"}
    assert result["tenantAdmin"] == {**common, "owner": "sub-carol"}
    assert result["person"] == common
    assert result["byId"] == "sub-unknown"
    assert (result["filtered"], result["empty"]) == (True, False)
