"""The console's downloads list in Chromium, against a real local stack.

Tasks are made through the API with real Cognito tokens (as another client of
the person's would), then found, followed and acted on through the page. Each
user has its own part of the story, so that one test's active export never
keeps another's page polling: alice (download, rename, delete, filters, XSS),
bob (cancel and retry of a long export, the hidden tab), carol (Load more,
told when done, polling that stops), admin and dave (the owner column).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import expect

from tests.browser.conftest import SCREENSHOTS, password, shot, sign_in
from tests.e2e.conftest import RunningStack, id_token

XSS_NAME = "<img src=x onerror=alert(1)>"
LONG_ROWS = 5_000_000  # ~20 s of building on the local stack: time to see it run and cancel it
#: how long to wait for what a build and the page's polling bring (expect's own default is 5 s)
LONG = 30_000


_tokens: dict[tuple[str, str], str] = {}


def auth(stack: RunningStack, username: str) -> dict[str, str]:
    """The user's ID token (one sign-in per stack and user: they last an hour)."""
    key = (stack.api, username)
    if key not in _tokens:
        _tokens[key] = id_token(stack, username)
    return {"Authorization": _tokens[key]}


def create(stack: RunningStack, username: str, task_name: str, rows: int = 2000, **body: Any) -> dict:
    """POST /downloads as `username` (a demo export unless `body` says otherwise)."""
    payload = {"task_name": task_name, "kind": "demo", "params": {"rows": rows}, **body}
    deadline = time.monotonic() + 30
    while True:
        resp = requests.post(f"{stack.api}/downloads", json=payload, headers=auth(stack, username),
                             timeout=30)
        if resp.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # too many active tasks: the local workers catch up
    assert resp.status_code == 202, resp.text
    return resp.json()


def get(stack: RunningStack, username: str, task_id: str) -> requests.Response:
    return requests.get(f"{stack.api}/downloads/{task_id}", headers=auth(stack, username), timeout=30)


def wait_until(stack: RunningStack, username: str, task_id: str, statuses: set[str]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        task = get(stack, username, task_id).json()
        if task["status"] in statuses:
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.2)


#: the page thinks its tab is hidden (Playwright cannot switch tabs away in headless Chromium)
HIDE = """() => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
    Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
    document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
    delete document.hidden;
    delete document.visibilityState;
    document.dispatchEvent(new Event("visibilitychange"));
}"""
#: the browser's Notification, recording what the page shows with it (the real one still runs)
RECORD_NOTIFICATIONS = """(() => {
    const Real = window.Notification;
    window.shownNotifications = [];
    window.Notification = class extends Real {
        constructor(title, options) {
            super(title, options);
            window.shownNotifications.push({title, body: options && options.body});
        }
    };
    Object.defineProperty(window.Notification, "permission", {get: () => Real.permission});
})()"""


def row(page: Any, text: str) -> Any:
    """The table row of the task named `text` (rows hold the task name as text)."""
    return page.get_by_role("table").get_by_role("row").filter(has_text=text)


def listing_requests(page: Any) -> list[str]:
    """A list that fills with every GET to /downloads the page sends from now on."""
    seen: list[str] = []

    def record(request: Any) -> None:
        if request.method == "GET" and "/downloads" in request.url:
            seen.append(request.url)

    page.on("request", record)
    return seen


def test_alice_sees_her_export_succeed_and_downloads_its_bytes(new_page: Any, stack: RunningStack) -> None:
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    sign_in(page, stack, "alice")
    expect(page.get_by_role("table")).to_be_visible()
    task = create(stack, "alice", "Users, March")
    page.get_by_role("button", name="Refresh").click()
    users = row(page, "Users, March")
    bar = users.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=LONG)
    expect(users.locator(".dl-status")).to_have_text("succeeded")
    expect(users).to_contain_text("2,000 rows")
    done = get(stack, "alice", task["id"]).json()
    expect(users).to_contain_text(done["file_name"])
    expect(users).to_contain_text(done["sha256"][:10])
    # a person's own list has no owner column
    expect(page.get_by_role("columnheader", name="Owner")).to_have_count(0)
    for label in ("Task name", "File name", "Status", "Progress", "Size", "Created", "Finished", "SHA-256"):
        expect(page.get_by_role("columnheader", name=label, exact=True)).to_be_visible()
    # the row's buttons for a finished export
    for name in ("Download", "Rename", "Delete"):
        expect(users.get_by_role("button", name=name, exact=True)).to_be_visible()
    for name in ("Cancel", "Retry"):
        expect(users.get_by_role("button", name=name, exact=True)).to_have_count(0)

    with page.expect_download() as info:
        users.get_by_role("button", name="Download", exact=True).click()
    download = info.value
    saved = Path(download.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == done["sha256"]
    assert download.suggested_filename == done["file_name"]

    users.get_by_role("button", name="Copy SHA-256").click()
    expect(page.get_by_role("status").filter(has_text="SHA-256 copied")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == done["sha256"]
    shot(page, "downloads-1440")


def test_a_failed_export_shows_its_error_and_the_filters_find_it(new_page: Any, stack: RunningStack) -> None:
    failed = create(stack, "alice", "missing object", kind="s3_bundle",
                    params={"bucket": stack.info["sample_bucket"], "keys": ["no/such/object.txt"]})
    wait_until(stack, "alice", failed["id"], {"failed"})
    create(stack, "alice", "a control export", rows=10)
    page = new_page()
    sign_in(page, stack, "alice")
    bad = row(page, "missing object")
    expect(bad.locator(".dl-status")).to_have_text("failed")
    expect(bad).to_contain_text("object_not_found")
    expect(bad).to_contain_text("no/such/object.txt")
    expect(bad.get_by_role("button", name="Retry", exact=True)).to_be_visible()
    expect(row(page, "a control export")).to_be_visible()

    # an action's error is a toast with the API's code and message: here the task went elsewhere
    gone = create(stack, "alice", "deleted elsewhere", kind="s3_bundle",
                  params={"bucket": stack.info["sample_bucket"], "keys": ["also/missing.txt"]})
    wait_until(stack, "alice", gone["id"], {"failed"})
    page.get_by_role("button", name="Refresh").click()
    assert requests.delete(f"{stack.api}/downloads/{gone['id']}", headers=auth(stack, "alice"),
                           timeout=30).status_code == 204
    row(page, "deleted elsewhere").get_by_role("button", name="Retry", exact=True).click()
    expect(page.locator("#toasts .toast.error")).to_contain_text("Retry failed: not_found:")
    expect(row(page, "deleted elsewhere")).to_have_count(0)

    page.get_by_label("Status", exact=True).select_option("failed")
    expect(row(page, "a control export")).to_have_count(0)
    expect(row(page, "missing object")).to_be_visible()
    page.get_by_label("Kind", exact=True).select_option("demo")
    expect(page.get_by_text("No downloads match these filters.")).to_be_visible()
    page.get_by_role("button", name="Clear filters").click()
    expect(row(page, "a control export")).to_be_visible()
    # a date range before anything existed lists nothing; one that ends today lists them again
    page.get_by_label("Created to", exact=True).fill("2020-01-31")
    expect(page.get_by_text("No downloads match these filters.")).to_be_visible()
    page.get_by_label("Created from", exact=True).fill("2020-01-01")
    page.get_by_label("Created to", exact=True).fill(time.strftime("%Y-%m-%d"))
    expect(row(page, "missing object")).to_be_visible()
    # a range that ends before it starts: the API's refusal in words, and no rows of the last filters
    page.get_by_label("Created from", exact=True).fill("2099-01-01")
    expect(page.get_by_text("created_after must not be later than created_before")).to_be_visible()
    expect(row(page, "missing object")).to_have_count(0)


def test_bob_does_not_see_alices_tasks(new_page: Any, stack: RunningStack) -> None:
    create(stack, "alice", "alice's private export", rows=10)
    create(stack, "bob", "bob's own export", rows=10)
    page = new_page()
    sign_in(page, stack, "bob")
    expect(row(page, "bob's own export")).to_be_visible()
    expect(page.get_by_role("table")).not_to_contain_text("alice's private export")
    expect(page.get_by_role("table")).not_to_contain_text("Users, March")


def test_a_task_name_is_text_and_runs_nothing(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "alice", XSS_NAME, rows=10)
    wait_until(stack, "alice", task["id"], {"succeeded"})
    page = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, stack, "alice")
    cell = row(page, XSS_NAME).get_by_role("rowheader")
    expect(cell).to_have_text(XSS_NAME)
    assert page.locator("img").count() == 0
    # the rename dialog and the toasts show it as text too
    row(page, XSS_NAME).get_by_role("button", name="Rename", exact=True).click()
    expect(page.get_by_label("Task name", exact=True)).to_have_value(XSS_NAME)
    page.keyboard.press("Escape")
    row(page, XSS_NAME).get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text(XSS_NAME)
    page.get_by_role("dialog").get_by_role("button", name="Don’t delete").click()
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_rename_from_the_row_then_find_it_by_the_new_name(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "alice", "quarterly numbers", rows=10)
    wait_until(stack, "alice", task["id"], {"succeeded"})
    page = new_page()
    sign_in(page, stack, "alice")
    target = row(page, "quarterly numbers")
    rename = target.get_by_role("button", name="Rename", exact=True)
    # by keyboard: the dialog takes the focus, Esc closes it and gives the focus back
    rename.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(page.get_by_label("Task name", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(rename).to_be_focused()

    rename.click()
    field = page.get_by_label("Task name", exact=True)
    field.fill("   ")  # white space only: the server refuses it, the dialog says why and stays
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text("validation_error")
    expect(dialog.get_by_role("alert")).to_contain_text("task_name")
    shot(page, "downloads-rename-error")
    field.fill("Zahlen fürs Quartal 第三季度")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    expect(row(page, "Zahlen fürs Quartal 第三季度")).to_be_visible()
    assert get(stack, "alice", task["id"]).json()["task_name"] == "Zahlen fürs Quartal 第三季度"

    page.reload()
    page.get_by_label("Name contains", exact=True).fill("FÜRS QUARTAL")
    expect(page.get_by_role("table").get_by_role("row")).to_have_count(2)  # the header and the one task
    expect(row(page, "Zahlen fürs Quartal 第三季度")).to_be_visible()


def test_delete_asks_first(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "alice", "to be deleted", rows=10)
    wait_until(stack, "alice", task["id"], {"succeeded"})
    page = new_page()
    sign_in(page, stack, "alice")
    target = row(page, "to be deleted")
    target.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete this download?")
    expect(dialog.get_by_role("button", name="Don’t delete")).to_be_focused()  # the safe choice first
    shot(page, "downloads-delete-dialog")
    dialog.get_by_role("button", name="Don’t delete").click()
    expect(dialog).to_have_count(0)
    expect(target).to_be_visible()
    assert get(stack, "alice", task["id"]).status_code == 200

    target.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(target).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="“to be deleted” was deleted.")).to_be_visible()
    assert get(stack, "alice", task["id"]).status_code == 404


def test_cancel_a_long_export_then_retry_it(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "bob", "five million rows", rows=LONG_ROWS)
    page = new_page()
    sign_in(page, stack, "bob")
    target = row(page, "five million rows")
    status = target.locator(".dl-status")
    expect(status).to_have_text("running", timeout=LONG)
    # a live bar: the percent grows while it runs
    bar = target.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]"), timeout=LONG)
    expect(target.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
    expect(target.get_by_role("button", name="Download", exact=True)).to_have_count(0)
    shot(page, "downloads-running")

    polls = listing_requests(page)
    target.get_by_role("button", name="Cancel", exact=True).click()
    expect(status).to_have_text(re.compile("^(canceling|canceled)$"))
    # a hidden tab asks nothing, even with a task still canceling; shown again, it catches up
    page.evaluate(HIDE)
    polls.clear()
    page.wait_for_timeout(2500)
    assert polls == []
    wait_until(stack, "bob", task["id"], {"canceled"})
    with page.expect_request(lambda r: "/downloads" in r.url and r.method == "GET"):
        page.evaluate(SHOW)
    expect(status).to_have_text("canceled", timeout=LONG)
    expect(target.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)

    target.get_by_role("button", name="Retry", exact=True).click()
    expect(status).to_have_text(re.compile("^(queued|running)$"))
    assert get(stack, "bob", task["id"]).json()["attempts"] == 2
    # stop it again (the local workers are shared) and watch the page follow
    requests.post(f"{stack.api}/downloads/{task['id']}/cancel", headers=auth(stack, "bob"), timeout=30)
    expect(status).to_have_text("canceled", timeout=LONG)


def test_told_when_an_export_finishes_and_polling_stops(new_page: Any, stack: RunningStack) -> None:
    bulk = [create(stack, "carol", f"bulk {n:02}", rows=1) for n in range(21)]  # more than a page (20)
    for task in bulk:  # finished before the page opens: this test's toast is the million rows'
        wait_until(stack, "carol", task["id"], {"succeeded"})
    page = new_page()
    sign_in(page, stack, "carol")
    expect(page.get_by_role("table").get_by_role("row")).to_have_count(21)  # the header and 20
    page.get_by_role("button", name="Load more").click()
    expect(row(page, "bulk 00")).to_be_visible()
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)

    polls = listing_requests(page)
    create(stack, "carol", "a million rows", rows=1_000_000)
    page.get_by_role("button", name="Refresh").click()
    target = row(page, "a million rows")
    expect(target.locator(".dl-status")).to_have_text(re.compile("^(queued|running)$"))
    toast = page.locator("#toasts .toast").filter(has_text="“a million rows” is ready.")
    expect(toast).to_be_visible(timeout=LONG)
    expect(toast.get_by_role("button", name="Download")).to_be_visible()
    assert page.title() == "(1) Download Center"
    expect(target.locator(".dl-status")).to_have_text("succeeded")
    shot(page, "downloads-ready-toast")
    assert len(polls) >= 2, polls  # the Refresh, then at least one poll that saw it finish

    # nothing is active: nothing is asked
    polls.clear()
    page.wait_for_timeout(2500)
    assert polls == []

    page.keyboard.press("Shift")  # the person is back: the count is seen
    expect(page).to_have_title("Download Center")


def test_no_load_more_of_the_old_page_while_new_filters_load(new_page: Any, stack: RunningStack) -> None:
    """The cursor on screen belongs to the page shown: following it while the filters' own first
    page is on its way would mix the old filters' rows into the new list."""
    for n in range(21 - len(requests.get(f"{stack.api}/downloads", params={"limit": 100},
                                         headers=auth(stack, "carol"), timeout=30).json()["items"])):
        create(stack, "carol", f"filler {n:02}", rows=1)  # more than a page, whatever ran before
    page = new_page()
    sign_in(page, stack, "carol")
    expect(page.get_by_role("button", name="Load more")).to_be_visible()
    held: list[Any] = []

    def filtered(url: str) -> bool:
        return "task_name=" in url

    def hold(route: Any) -> None:
        held.append(route)  # the filtered page waits here

    page.route(filtered, hold)
    page.get_by_label("Name contains").fill("zzz-no-such-task")
    while not held:
        page.wait_for_timeout(50)
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    held[0].continue_()
    page.unroute(filtered, hold)
    expect(row(page, "bulk")).to_have_count(0)  # nothing matches: no row of the old list is left
    expect(row(page, "filler")).to_have_count(0)
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)


def test_notify_me_is_offered_once(new_page: Any, stack: RunningStack) -> None:
    allowed = new_page(permissions=["notifications"])
    sign_in(allowed, stack, "bob")
    expect(allowed.get_by_role("table")).to_be_visible()
    expect(allowed.get_by_role("button", name="Refresh")).to_be_visible()
    expect(allowed.get_by_role("button", name="Notify me")).to_have_count(0)  # nothing to ask

    page = new_page()
    sign_in(page, stack, "bob")
    page.get_by_role("button", name="Notify me").click()  # the browser's own question follows
    expect(page.get_by_role("button", name="Notify me")).to_have_count(0)
    page.reload()
    expect(page.get_by_role("button", name="Refresh")).to_be_visible()
    expect(page.get_by_role("button", name="Notify me")).to_have_count(0)  # asked once, not again


def test_a_hidden_tab_that_may_notify_keeps_watching(new_page: Any, stack: RunningStack) -> None:
    page = new_page(permissions=["notifications"])
    page.add_init_script(RECORD_NOTIFICATIONS)
    page.reload()
    sign_in(page, stack, "dave")
    create(stack, "dave", "while you were away", rows=600_000)
    page.get_by_role("button", name="Refresh").click()
    target = row(page, "while you were away")
    expect(target.locator(".dl-status")).to_have_text(re.compile("^(queued|running)$"))
    page.evaluate(HIDE)
    page.wait_for_function("() => window.shownNotifications.length > 0", timeout=LONG)
    assert page.evaluate("() => window.shownNotifications") == [
        {"title": "Export ready", "body": "while you were away"}]
    assert page.title() == "(1) Download Center"
    page.evaluate(SHOW)  # back on the tab: seen
    expect(page).to_have_title("Download Center")


def test_the_chinese_page(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "carol", "中文页面的导出", rows=10)
    wait_until(stack, "carol", task["id"], {"succeeded"})
    page = new_page(locale="zh-CN")
    page.get_by_label("用户名", exact=True).fill("carol")
    page.get_by_label("密码", exact=True).fill(password(stack, "carol"))
    page.get_by_role("button", name="登录").click()
    target = row(page, "中文页面的导出")
    expect(target.locator(".dl-status")).to_have_text("已完成")
    for label in ("任务名称", "文件名", "状态", "进度", "大小", "创建时间", "完成时间", "操作"):
        expect(page.get_by_role("columnheader", name=label, exact=True)).to_be_visible()
    expect(target.get_by_role("button", name="下载", exact=True)).to_be_visible()
    expect(page).to_have_title("下载中心")
    shot(page, "downloads-zh-1440")

    page.get_by_label("名称包含", exact=True).fill("中文页面")
    expect(page.get_by_role("table").get_by_role("row")).to_have_count(2)  # the header and the one

    # switching the language redraws the list from what the page has (filters included): no request
    polls = listing_requests(page)
    page.get_by_label("语言", exact=True).select_option("en")
    expect(target.locator(".dl-status")).to_have_text("succeeded")
    expect(page.get_by_role("columnheader", name="Task name")).to_be_visible()
    expect(target.get_by_role("button", name="Download", exact=True)).to_be_visible()
    expect(page.get_by_label("Name contains", exact=True)).to_have_value("中文页面")
    expect(page.get_by_role("table").get_by_role("row")).to_have_count(2)
    assert polls == []


def test_admins_see_the_owner(new_page: Any, stack: RunningStack) -> None:
    create(stack, "carol", "carol's for the admins", rows=10)
    create(stack, "alice", "seen by the admins", rows=10)
    page = new_page()
    sign_in(page, stack, "admin")
    expect(page.get_by_role("columnheader", name="Owner")).to_be_visible()
    target = row(page, "seen by the admins").first
    expect(target.locator(".c-owner")).to_contain_text("alice")
    expect(page.get_by_label("Owner", exact=True)).to_be_visible()
    expect(page.get_by_label("Tenant", exact=True)).to_be_visible()
    # an owner picked by name filters by that user's ID
    page.get_by_label("Owner", exact=True).fill("carol")
    expect(row(page, "seen by the admins")).to_have_count(0)
    expect(row(page, "carol's for the admins")).to_be_visible()
    shot(page, "downloads-admin-1440")

    tenant_admin = new_page()
    sign_in(tenant_admin, stack, "dave")
    expect(tenant_admin.get_by_role("columnheader", name="Owner")).to_be_visible()
    expect(row(tenant_admin, "seen by the admins")).to_be_visible()
    expect(tenant_admin.get_by_label("Owner", exact=True)).to_be_visible()
    expect(tenant_admin.get_by_label("Tenant", exact=True)).to_have_count(0)  # a tenant admin has one tenant


def test_a_phone_sized_window(new_page: Any, stack: RunningStack) -> None:
    task = create(stack, "alice", "on a phone", rows=10)
    page = new_page(width=375, height=812, permissions=["clipboard-read", "clipboard-write"])
    # a page on plain http has no navigator.clipboard: the copy button falls back
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined})")
    page.reload()
    sign_in(page, stack, "alice")
    target = row(page, "on a phone")
    download = target.get_by_role("button", name="Download", exact=True)
    expect(download).to_be_visible()
    box = download.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    shot(page, "downloads-375")
    page.screenshot(path=str(SCREENSHOTS / "downloads-375-top.png"))  # what the phone shows first

    target.get_by_role("button", name="Copy SHA-256").click()
    expect(page.locator("#toasts")).to_contain_text("SHA-256 copied.")
    reader = page.context.new_page()  # a page with the Clipboard API reads what the fallback copied
    reader.goto(stack.info["console_url"])
    sha256 = wait_until(stack, "alice", task["id"], {"succeeded"})["sha256"]
    assert reader.evaluate("() => navigator.clipboard.readText()") == sha256
