"""PATCH /downloads/{id}: a new task_name, held to the create's rules, found by the name filter."""

from __future__ import annotations

import json

import pytest


def patch(stack, user, task_id, body, content_type="application/json"):
    headers = {**stack.users[user].headers, "Content-Type": content_type}
    data = body if isinstance(body, str) else json.dumps(body)
    return stack.client.http.request("PATCH", f"/downloads/{task_id}", headers=headers, body=data)


def listing(stack, user, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    resp = stack.client.http.get(f"/downloads?{qs}", headers=stack.users[user].headers)
    return [t["id"] for t in resp.json_body["items"]]


def test_rename_answers_the_task_and_the_name_filter_finds_the_new_name(stack):
    task = stack.create(task_name="Quarterly report")
    resp = patch(stack, "alice", task["id"], {"task_name": "年度 Summary 2026"})
    assert resp.status_code == 200, resp.body
    assert resp.json_body["task_name"] == "年度 Summary 2026"
    assert resp.json_body["file_name"] == task["file_name"]  # the file keeps its name
    got = stack.client.http.get(f"/downloads/{task['id']}", headers=stack.users["alice"].headers)
    assert got.json_body["task_name"] == "年度 Summary 2026"
    # the lower-case copy the filter reads moved with it
    assert listing(stack, "alice", task_name="summary") == [task["id"]]
    assert listing(stack, "alice", task_name="quarterly") == []


def test_a_finished_task_can_be_renamed_and_keeps_its_file(stack):
    task = stack.create()
    stack.run_worker()
    resp = patch(stack, "alice", task["id"], {"task_name": "kept"})
    assert resp.status_code == 200
    assert resp.json_body["status"] == "succeeded" and resp.json_body["url"]


def test_an_admin_may_rename_anothers_task(stack):
    task = stack.create()
    assert patch(stack, "admin", task["id"], {"task_name": "by the admin"}).status_code == 200


@pytest.mark.parametrize("user", ["bob", "carol"])
def test_a_task_the_caller_may_not_see_is_404_and_keeps_its_name(stack, user):
    task = stack.create(task_name="mine")
    resp = patch(stack, user, task["id"], {"task_name": "theirs"})
    assert resp.status_code == 404 and resp.json_body["error"]["code"] == "not_found"
    got = stack.client.http.get(f"/downloads/{task['id']}", headers=stack.users["alice"].headers)
    assert got.json_body["task_name"] == "mine"


def test_unknown_task_is_404(stack):
    resp = patch(stack, "alice", "01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", {"task_name": "x"})
    assert resp.status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({}, "task_name"),
    ({"task_name": ""}, "task_name"),
    ({"task_name": "   "}, "task_name"),
    ({"task_name": 7}, "task_name"),
    ({"task_name": "x" * 201}, "task_name"),
    ({"task_name": "ok", "kind": "demo"}, "kind"),
])
def test_bad_names_are_400_naming_the_field_and_change_nothing(stack, body, field):
    task = stack.create(task_name="unchanged")
    resp = patch(stack, "alice", task["id"], body)
    assert resp.status_code == 400, resp.body
    assert field in [d["field"] for d in resp.json_body["error"]["details"]]
    got = stack.client.http.get(f"/downloads/{task['id']}", headers=stack.users["alice"].headers)
    assert got.json_body["task_name"] == "unchanged"


def test_a_body_that_is_not_json_is_400(stack):
    task = stack.create()
    resp = patch(stack, "alice", task["id"], "{not json")
    assert resp.status_code == 400 and resp.json_body["error"]["code"] == "invalid_json"


#: a name that shows other than it is: an ANSI sequence, a fake extra line, a NUL, a right-to-left
#: override ("invoice\u202efdp.exe" reads "invoiceexe.pdf"), zero-width characters
DECEPTIVE = ["evil\x1b[2J\x1b]0;pwned\x07", "ok\r\nFAKE ROW  demo/csv  succeeded", "nul\x00",
             "invoice\u202efdp.exe", "zero\u200bwidth\u200d", "bom\ufeff"]


@pytest.mark.parametrize("name", DECEPTIVE)
def test_a_rename_to_a_name_with_control_or_format_characters_is_400_and_changes_nothing(stack, name):
    task = stack.create(task_name="unchanged")
    resp = patch(stack, "alice", task["id"], {"task_name": name})
    assert resp.status_code == 400, resp.body
    error = resp.json_body["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["task_name"]
    assert "control character" in error["details"][0]["issue"]
    assert stack.get(task["id"])["task_name"] == "unchanged"


@pytest.mark.parametrize("field", ["task_name", "file_name"])
@pytest.mark.parametrize("name", DECEPTIVE)
def test_a_create_with_such_a_name_is_400_and_queues_nothing(stack, name, field):
    body = {"task_name": "fine", "kind": "demo", field: name}
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps(body))
    assert resp.status_code == 400, resp.body
    error = resp.json_body["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    assert stack.drain() == []
