"""The "New export" form: generated from GET /kinds, creating through POST /downloads.

Every test drives the real page against a real local stack (Cognito, the API,
DynamoDB and the build queue in moto) and checks what the API stored, not only
what the page says. The only interference is Playwright's network routing,
where a test needs an answer the stack cannot be made to give on cue (a lost
answer to a create, a failing GET /kinds).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.browser.conftest import TIMEOUT_MS, password, shot, sign_in
from tests.e2e.conftest import RunningStack, id_token

HTTP_TIMEOUT = 30
#: Playwright's own default for expect(), restored after this module
EXPECT_DEFAULT_MS = 5_000


@pytest.fixture(autouse=True, scope="module")
def patient_expect() -> Iterator[None]:
    """expect() waits as long as actions do: the stack is one process, and the builds
    this module starts share its CPU with the API (a create took over 5 s beside them)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    yield
    expect.set_options(timeout=EXPECT_DEFAULT_MS)


def tasks_named(stack: RunningStack, name: str) -> list[dict[str, Any]]:
    """alice's tasks called exactly `name`, as the API lists them."""
    resp = requests.get(f"{stack.api}/downloads", params={"task_name": name, "limit": 100},
                        headers={"Authorization": id_token(stack, "alice")}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return [task for task in resp.json()["items"] if task["task_name"] == name]


def is_create(request: Any) -> bool:
    """A POST /downloads the page sent."""
    return request.method == "POST" and request.url.endswith("/downloads")


def unique(label: str) -> str:
    """A task name no other test of the module uses (they share one stack)."""
    return f"{label} {uuid.uuid4().hex[:8]}"


def open_form(page: Any) -> Any:
    """Click New export and wait for the demo kind's fields; returns the dialog."""
    page.get_by_role("button", name="New export").click()
    dialog = page.get_by_role("dialog", name="New export")
    dialog.get_by_label("rows", exact=True).wait_for()
    return dialog


def issue_beside(dialog: Any, label: str) -> str:
    """The error text of the field labelled `label` (its own .field), after checking the wiring."""
    from playwright.sync_api import expect

    control = dialog.get_by_label(label, exact=True)
    expect(control).to_have_attribute("aria-invalid", "true")
    described = control.get_attribute("aria-describedby").split()
    error = dialog.locator(f"#{described[0]}")
    # the error line is the field's own, beside the control, not somewhere else in the form
    field = dialog.locator(".field", has=dialog.page.get_by_label(label, exact=True)).last
    assert field.locator(f"#{described[0]}").count() == 1
    return error.inner_text()


def test_the_demo_form_creates_the_export_it_shows(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    for label in ("Task name", "Kind", "Format", "File name", "rows", "seed", "delimiter", "bom",
                  "escape_formulas", "compression"):
        expect(dialog.get_by_label(label, exact=True)).to_be_visible()
    expect(dialog.get_by_label("Task name")).to_be_focused()
    expect(dialog.get_by_label("Task name")).to_have_attribute("required", "")
    expect(dialog.get_by_label("rows", exact=True)).to_have_attribute("min", "1")
    expect(dialog.get_by_label("rows", exact=True)).to_have_attribute("max", "10000000")
    expect(dialog.get_by_label("Kind")).to_have_value("demo")
    assert dialog.get_by_label("Format").locator("option").all_inner_texts() == ["csv", "jsonl", "xlsx"]
    # the schema's own words are the hint
    expect(dialog.get_by_text("csv only: start with a UTF-8 byte order mark")).to_be_visible()

    name = unique("Users, <b>March</b>")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("Format").select_option("jsonl")
    dialog.get_by_label("rows", exact=True).fill("2000")
    dialog.get_by_label("seed", exact=True).fill("7")
    shot(page, "form-demo-1440")
    dialog.get_by_role("button", name="Create").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status").get_by_text(f"“{name}” queued")).to_be_visible()
    [task] = tasks_named(stack, name)
    assert task["kind"] == "demo"
    assert task["format"] == "jsonl"
    # numbers as numbers, the fields left empty left out
    assert task["params"] == {"rows": 2000, "seed": 7}
    # what was typed stays text: the task name's markup made no element
    assert page.locator("b", has_text="March").count() == 0


def test_dynamodb_fields_examples_and_filters(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page(width=375, height=812)
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    dialog.get_by_label("Kind").select_option("dynamodb_table")
    expect(dialog.get_by_label("rows", exact=True)).to_have_count(0)
    for label in ("table", "index", "segments", "columns", "all_columns", "escape_formulas"):
        expect(dialog.get_by_label(label, exact=True)).to_be_visible()
    filters = dialog.get_by_role("group", name="filters", exact=True)
    expect(filters).to_be_visible()
    expect(dialog.get_by_label("table", exact=True)).to_have_attribute("required", "")
    assert dialog.get_by_label("Format").locator("option").all_inner_texts() == ["csv", "jsonl", "xlsx"]

    table = dialog.get_by_label("table", exact=True)
    expect(table).to_have_value("")
    dialog.get_by_role("button", name="Use example").click()
    expect(table).to_have_value(stack.info["demo_table"])

    name = unique("ddb")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("columns", exact=True).fill("id\nname\n\ncountry")
    dialog.get_by_role("button", name="Add a row to filters").click()
    expect(dialog.get_by_label("attr", exact=True)).to_be_focused()
    dialog.get_by_label("attr", exact=True).fill("country")
    dialog.get_by_label("op", exact=True).select_option("in")
    dialog.get_by_label("value", exact=True).fill('["DE", "FR"]')
    dialog.get_by_role("button", name="Add a row to filters").click()
    second = filters.get_by_role("group", name="filters #2")
    second.get_by_label("attr", exact=True).fill("age")
    second.get_by_label("op", exact=True).select_option("gte")
    second.get_by_label("value", exact=True).fill("30")
    # an empty third row is left out
    dialog.get_by_role("button", name="Add a row to filters").click()
    # a boolean left alone is left out; one that was set is sent
    escape = dialog.get_by_label("escape_formulas", exact=True)
    escape.check()
    escape.uncheck()
    dialog.get_by_role("button", name="Add a row to headers").click()
    headers = dialog.get_by_role("group", name="headers #1")
    headers.get_by_label("Key", exact=True).fill("name")
    headers.get_by_label("Value", exact=True).fill("名前")
    shot(page, "form-dynamodb-375")
    # at 375 px the dialog fits the screen: nothing sticks out sideways
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375

    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()
    [task] = tasks_named(stack, name)
    assert task["kind"] == "dynamodb_table"
    assert task["format"] == "csv"
    assert task["params"] == {
        "table": stack.info["demo_table"],
        "columns": ["id", "name", "country"],
        "filters": [{"attr": "country", "op": "in", "value": ["DE", "FR"]},
                    {"attr": "age", "op": "gte", "value": 30}],
        "escape_formulas": False,
        "headers": {"name": "名前"},
    }


def test_server_issues_appear_beside_the_fields_they_name(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    name = unique("issues")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("File name").fill(".hidden")
    # the browser's own check would stop rows = 0 first; the server's must show too
    dialog.locator("form").evaluate("form => { form.noValidate = true; }")
    dialog.get_by_label("rows", exact=True).fill("0")
    dialog.get_by_role("button", name="Create").click()

    alert = dialog.locator(".form-error.top")
    expect(alert).to_contain_text("Not created")
    expect(alert).to_contain_text("params.rows must be between 1 and 10000000")
    assert "must be between 1 and 10000000" in issue_beside(dialog, "rows")
    assert "must not start with a dot" in issue_beside(dialog, "File name")
    # the first invalid field in the form's order has the focus
    expect(dialog.get_by_label("File name")).to_be_focused()
    expect(dialog.get_by_label("seed", exact=True)).not_to_have_attribute("aria-invalid", "true")
    shot(page, "form-issues-1440")

    # a source off the allow-list: 403, its detail beside `table`; a filter's issue beside its row's value
    dialog.get_by_label("Kind").select_option("dynamodb_table")
    dialog.get_by_label("File name").fill("")
    dialog.get_by_label("table", exact=True).fill("not-on-the-list")
    dialog.get_by_role("button", name="Create").click()
    expect(alert).to_contain_text("You may not export table 'not-on-the-list'")
    assert "is not allowed for you" in issue_beside(dialog, "table")
    expect(dialog.get_by_label("File name")).not_to_have_attribute("aria-invalid", "true")
    expect(dialog.get_by_label("table", exact=True)).to_be_focused()

    dialog.get_by_role("button", name="Use example").click()
    dialog.get_by_role("button", name="Add a row to filters").click()
    dialog.get_by_label("attr", exact=True).fill("age")
    dialog.get_by_label("op", exact=True).select_option("between")
    dialog.get_by_label("value", exact=True).fill("3")
    dialog.get_by_role("button", name="Create").click()
    expect(alert).to_contain_text("params.filters[0].value")
    assert "must be a list of two values, [low, high], for op between" in issue_beside(dialog, "value")
    expect(dialog.get_by_label("table", exact=True)).not_to_have_attribute("aria-invalid", "true")
    assert tasks_named(stack, name) == []

    # fixed, the same dialog creates it (a refused request did not use up its Idempotency-Key)
    dialog.get_by_label("value", exact=True).fill("[18, 65]")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()
    [task] = tasks_named(stack, name)
    assert task["params"]["filters"] == [{"attr": "age", "op": "between", "value": [18, 65]}]


def test_an_issue_about_all_parameters_goes_under_their_legend(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    dialog.get_by_label("Task name").fill(unique("bundle"))
    dialog.get_by_label("Kind").select_option("s3_bundle")
    for label in ("bucket", "keys", "prefix", "on_missing"):
        expect(dialog.get_by_label(label, exact=True)).to_be_visible()
    # one format only: shown, nothing to choose
    expect(dialog.get_by_label("Format")).to_have_value("zip")
    dialog.get_by_label("bucket", exact=True).fill(stack.info["sample_bucket"])
    dialog.get_by_role("button", name="Create").click()
    params = dialog.get_by_role("group", name="Parameters s3_bundle")
    error = params.locator("> .field-error")
    expect(error).to_have_text("must name keys, a prefix, or both")
    assert params.get_attribute("aria-describedby") == error.get_attribute("id")
    # no single field is blamed; the first of them gets the focus
    expect(dialog.get_by_label("bucket", exact=True)).to_be_focused()
    expect(dialog.get_by_label("bucket", exact=True)).not_to_have_attribute("aria-invalid", "true")
    dialog.get_by_role("button", name="Use example").click()
    expect(dialog.get_by_label("prefix", exact=True)).not_to_have_value("")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()


def test_a_double_click_creates_one_task(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    posts: list[dict[str, str]] = []
    page.on("request", lambda r: posts.append(r.headers) if is_create(r) else None)
    dialog = open_form(page)
    name = unique("double")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("rows", exact=True).fill("10")
    dialog.get_by_role("button", name="Create").dblclick()
    expect(dialog).to_be_hidden()
    assert len(tasks_named(stack, name)) == 1
    assert posts and all(h.get("idempotency-key") == posts[0]["idempotency-key"] for h in posts)
    assert posts[0]["idempotency-key"]


def test_a_lost_answer_is_retried_with_the_same_key(new_page: Any, stack: RunningStack) -> None:
    """The server made the task but the page never heard: Create again replays, no second task."""
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    name = unique("lost")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("rows", exact=True).fill("10")
    first: dict[str, Any] = {}

    def lose_the_answer(route: Any) -> None:
        answer = route.fetch()
        first["status"] = answer.status
        first["key"] = route.request.headers.get("idempotency-key")
        # a proxy timing out after the API answered: the page sees an error, the task exists
        route.fulfill(status=408, content_type="application/json",
                      body=json.dumps({"error": {"code": "timeout", "message": "The answer was lost."}}))

    page.route("**/downloads", lose_the_answer, times=1)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.locator(".form-error.top")).to_contain_text("The answer was lost.")
    assert first["status"] == 202
    assert len(tasks_named(stack, name)) == 1

    with page.expect_response(lambda r: is_create(r.request)) as replay:
        dialog.get_by_role("button", name="Create").click()
    assert replay.value.status == 202
    assert replay.value.headers.get("idempotent-replayed") == "true"
    assert replay.value.request.headers.get("idempotency-key") == first["key"]
    expect(dialog).to_be_hidden()
    assert len(tasks_named(stack, name)) == 1

    # a new opening is a new request: its key differs
    open_form(page)
    with page.expect_request(is_create) as again:
        page.get_by_role("dialog").get_by_label("Task name").fill(unique("lost again"))
        page.get_by_role("dialog").get_by_role("button", name="Create").click()
    assert again.value.headers.get("idempotency-key") not in (None, first["key"])


def test_keyboard_only(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    new_export = page.get_by_role("button", name="New export")
    for _ in range(12):
        if new_export.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(new_export).to_be_focused()

    # Escape closes, and the focus goes back where it was
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="New export")
    expect(dialog.get_by_label("Task name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(new_export).to_be_focused()

    page.keyboard.press("Enter")
    expect(dialog.get_by_label("Task name")).to_be_focused()
    name = unique("keyboard")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Kind")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Format")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("File name")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Use example")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog.get_by_label("rows", exact=True)).to_have_value("1000")
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("rows", exact=True)).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("300")
    page.keyboard.press("Enter")  # submits the form
    expect(dialog).to_be_hidden()
    [task] = tasks_named(stack, name)
    assert task["params"] == {"rows": 300, "seed": 1}


def test_cancel_closes_without_creating(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    name = unique("canceled")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("dialog")).to_have_count(0)  # removed, not only hidden
    assert tasks_named(stack, name) == []


def test_the_chinese_form_shows_chinese_labels(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page(locale="zh-CN", width=375, height=812)
    page.get_by_label("用户名").fill("alice")
    page.get_by_label("密码").fill(password(stack, "alice"))
    page.get_by_role("button", name="登录").click()
    page.get_by_role("button", name="新建导出").click()
    dialog = page.get_by_role("dialog", name="新建导出")
    for label in ("任务名称", "类型", "格式", "文件名"):
        expect(dialog.get_by_label(label, exact=True)).to_be_visible()
    # property names stay as the schema has them
    expect(dialog.get_by_label("rows", exact=True)).to_be_visible()
    for button in ("创建", "取消", "使用示例"):
        expect(dialog.get_by_role("button", name=button, exact=True)).to_be_visible()
    expect(dialog.get_by_text("标有 * 的字段为必填项。")).to_be_visible()
    shot(page, "form-demo-375-zh")


def test_a_language_change_translates_the_open_form_in_place(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    dialog.get_by_label("Task name").fill("kept as typed")
    dialog.get_by_label("rows", exact=True).fill("42")
    # the header's switch is behind the modal; the language can change all the same (another tab's choice)
    page.locator(".lang select").evaluate("s => { s.value = 'zh'; s.dispatchEvent(new Event('change')); }")
    dialog = page.get_by_role("dialog", name="新建导出")
    expect(dialog.get_by_label("任务名称")).to_have_value("kept as typed")
    expect(dialog.get_by_label("rows", exact=True)).to_have_value("42")
    expect(dialog.get_by_role("button", name="创建")).to_be_visible()
    expect(dialog.get_by_role("button", name="使用示例")).to_be_visible()


def test_kinds_that_fail_to_load_say_so_and_can_be_retried(new_page: Any, stack: RunningStack) -> None:
    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    page.route("**/kinds", lambda route: route.fulfill(
        status=429, content_type="application/json",
        body=json.dumps({"error": {"code": "throttled", "message": "Rate exceeded"}})), times=1)
    page.get_by_role("button", name="New export").click()
    dialog = page.get_by_role("dialog", name="New export")
    expect(dialog.get_by_role("alert")).to_have_text("Cannot load the kinds of export: Rate exceeded")
    expect(dialog.get_by_role("button", name="Create")).to_be_disabled()
    dialog.get_by_role("button", name="Try again").click()
    expect(dialog.get_by_label("rows", exact=True)).to_be_visible()
    expect(dialog.get_by_role("button", name="Create")).to_be_enabled()


def test_an_export_made_in_the_form_runs_to_its_download(new_page: Any, stack: RunningStack) -> None:
    """The whole errand: create through the form, watch it in the list, save the file."""
    import hashlib
    from pathlib import Path

    from playwright.sync_api import expect

    page = new_page()
    sign_in(page, stack, "alice")
    dialog = open_form(page)
    name = unique("Quarterly 报表")
    dialog.get_by_label("Task name").fill(name)
    dialog.get_by_label("rows", exact=True).fill("30000")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_be_hidden()
    # the new task is at the top of the list at once, and followed there
    row = page.get_by_role("table").get_by_role("row").filter(has_text=name)
    expect(row).to_have_count(1)
    expect(page.get_by_role("table").get_by_role("row").nth(1)).to_contain_text(name)
    bar = row.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=TIMEOUT_MS)
    expect(row.locator(".dl-status")).to_have_text("succeeded")
    [task] = tasks_named(stack, name)
    assert task["status"] == "succeeded"
    with page.expect_download() as info:
        row.get_by_role("button", name="Download", exact=True).click()
    saved = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == task["sha256"]
    assert info.value.suggested_filename == task["file_name"]
