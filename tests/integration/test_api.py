"""Every route and error path of the contract, through chalice.test.Client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository
from chalicelib.task import Status

from .conftest import claim, create_then_drop_table

PROTECTED = [
    ("GET", "/kinds"), ("POST", "/downloads"), ("GET", "/downloads"),
    ("GET", "/downloads/X"), ("GET", "/downloads/X/file"), ("POST", "/downloads/X/cancel"),
    ("POST", "/downloads/X/retry"), ("DELETE", "/downloads/X"),
]


def call(stack, method, path, user=None, body=None, headers=None):
    h = dict(stack.users[user].headers) if user else {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    return stack.client.http.request(method, path, headers=h, body=data or b"")


def error_code(resp):
    body = json.loads(resp.body)
    assert set(body) == {"error"} and "message" in body["error"], body
    return body["error"]["code"]


def test_health_needs_no_token(stack):
    resp = stack.client.http.get("/health")
    assert resp.status_code == 200 and resp.json_body == {"status": "ok"}


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_protected_route_is_401_without_claims(stack, method, path):
    resp = call(stack, method, path, body={})
    assert resp.status_code == 401 and error_code(resp) == "unauthorized"


def test_kinds_catalog(stack):
    resp = call(stack, "GET", "/kinds", "alice")
    kinds = {k["kind"]: k for k in resp.json_body["items"]}
    assert {"demo", "dynamodb_table"} <= set(kinds)
    assert kinds["demo"]["formats"][0] == "csv" and "jsonl" in kinds["demo"]["formats"]
    assert kinds["dynamodb_table"]["params_schema"]["required"] == ["table"]
    assert kinds["demo"]["title"]


def test_create_returns_queued_task_and_enqueues_a_build(stack):
    resp = call(stack, "POST", "/downloads", "alice",
                {"task_name": "用户数据导出", "kind": "demo", "format": "jsonl",
                 "file_name": "user_list_202405", "params": {"rows": 10}})
    assert resp.status_code == 202
    task = resp.json_body
    assert resp.headers["Location"] == f"/downloads/{task['id']}"
    assert task["status"] == "queued" and task["file_name"] == "user_list_202405.jsonl"
    assert task["owner"] == stack.users["alice"].sub and task["owner_name"] == "alice"
    assert task["tenant"] == "acme" and task["attempts"] == 1 and task["url"] is None
    assert task["created_at"].endswith("Z")
    bodies = [json.loads(r["body"]) for r in stack.drain()]
    assert bodies == [{"type": "download.build", "version": 1, "task_id": task["id"]}]


@pytest.mark.parametrize("body,code", [
    ("{not json", "invalid_json"),
    ('["a"]', "invalid_json"),
    ({"kind": "demo"}, "validation_error"),
    ({"task_name": "x" * 201, "kind": "demo"}, "validation_error"),
    ({"task_name": "t", "kind": "demo", "file_name": "../../etc/passwd"}, "validation_error"),
    ({"task_name": "t", "kind": "demo", "file_name": ".env"}, "validation_error"),
    ({"task_name": "t", "kind": "nosuch"}, "unknown_kind"),
    ({"task_name": "t", "kind": "demo", "format": "pdf"}, "unknown_format"),
    ({"task_name": "t", "kind": "demo", "params": {"rows": -1}}, "validation_error"),
    ({"task_name": "t", "kind": "demo", "params": {"rows": "many"}}, "validation_error"),
    ({"task_name": "t", "kind": "demo", "params": {"table": "x"}}, "validation_error"),
    ('{"task_name": "' + "x" * 70_000 + '", "kind": "demo"}', "body_too_large"),
])
def test_create_bad_input_is_400_with_a_stable_code(stack, body, code):
    resp = call(stack, "POST", "/downloads", "alice", body)
    assert resp.status_code == 400 and error_code(resp) == code
    assert stack.drain() == []


@pytest.mark.parametrize("body", [
    '{"task_name": "\\ud800", "kind": "demo"}',
    '{"task_name": "t", "kind": "demo", "params": {"rows": 5, "headers": {"id": "\\udc00"}}}',
    '{"task_name": "t", "kind": "demo", "params": ' + "[" * 30_000 + "]" * 30_000 + "}",
])
def test_bodies_no_encoder_can_take_are_400_and_store_nothing(stack, body):
    """A lone surrogate was a 500, or, inside params, a stored task that broke the owner's listing."""
    resp = call(stack, "POST", "/downloads", "alice", body)
    assert resp.status_code == 400 and error_code(resp) == "invalid_json"
    assert stack.drain() == []
    listing = call(stack, "GET", "/downloads", "alice")
    assert listing.status_code == 200 and listing.json_body["items"] == []


def test_validation_errors_carry_field_details(stack):
    resp = call(stack, "POST", "/downloads", "alice", {"kind": "demo", "task_name": ""})
    details = json.loads(resp.body)["error"]["details"]
    assert details == [{"field": "task_name", "issue": "must not be empty"}]


def test_idempotency_key_replays_the_first_task(stack):
    body = {"task_name": "t", "kind": "demo", "params": {"rows": 5}}
    first = call(stack, "POST", "/downloads", "alice", body, {"Idempotency-Key": "k-1"})
    again = call(stack, "POST", "/downloads", "alice", body, {"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json_body["id"] == again.json_body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    # nothing new is created; the queued task's build message is sent again in case it was lost
    assert {json.loads(r["body"])["task_id"] for r in stack.drain()} == {first.json_body["id"]}
    assert len(call(stack, "GET", "/downloads", "alice").json_body["items"]) == 1
    conflict = call(stack, "POST", "/downloads", "alice", body | {"task_name": "other"},
                    {"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409 and error_code(conflict) == "idempotency_conflict"
    # keys are per principal: bob's k-1 is a different task
    bobs = call(stack, "POST", "/downloads", "bob", body, {"Idempotency-Key": "k-1"})
    assert bobs.status_code == 202 and bobs.json_body["id"] != first.json_body["id"]


def test_idempotency_key_expires_after_24_hours(stack):
    body = {"task_name": "t", "kind": "demo"}
    first = call(stack, "POST", "/downloads", "alice", body, {"Idempotency-Key": "old"})
    ddb = boto3.client("dynamodb")
    items = ddb.scan(TableName=TaskModel.Meta.table_name)["Items"]
    key = next(i["id"] for i in items if i["id"]["S"].startswith("idem#"))
    ddb.update_item(TableName=TaskModel.Meta.table_name, Key={"id": key},
                    UpdateExpression="SET created_at = :t",
                    ExpressionAttributeValues={":t": {"S": "2020-01-01T00:00:00.000000+0000"}})
    again = call(stack, "POST", "/downloads", "alice", body, {"Idempotency-Key": "old"})
    assert again.status_code == 202 and again.json_body["id"] != first.json_body["id"]


def test_too_many_active_tasks_is_429(stack):
    for _ in range(20):
        stack.create()
    resp = call(stack, "POST", "/downloads", "alice", {"task_name": "t", "kind": "demo"})
    assert resp.status_code == 429 and error_code(resp) == "too_many_active_tasks"
    # another user is not affected
    assert call(stack, "POST", "/downloads", "bob", {"task_name": "t", "kind": "demo"}
                ).status_code == 202


def test_listing_newest_first_with_cursor_pages(stack):
    ids = [stack.create(task_name=f"t{i}")["id"] for i in range(5)]
    stack.create("bob")
    seen, cursor = [], None
    while True:
        path = "/downloads?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = call(stack, "GET", path, "alice").json_body
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


def test_listing_filters(stack):
    a = stack.create(task_name="Monthly SALES", file_name="sales-nov")
    b = stack.create(task_name="users", format="jsonl")
    stack.run_worker()
    c = stack.create(task_name="later sales")

    def ids(query, user="alice"):
        resp = call(stack, "GET", "/downloads?" + query, user)
        assert resp.status_code == 200, resp.body
        return [t["id"] for t in resp.json_body["items"]]

    assert ids("status=succeeded") == [b["id"], a["id"]]
    assert ids("status=queued,failed") == [c["id"]]
    assert ids("task_name=sales") == [c["id"], a["id"]]
    assert ids("file_name=SALES-N") == [a["id"]]
    assert ids("kind=dynamodb_table") == []
    created = datetime.fromisoformat(c["created_at"].replace("Z", "+00:00"))
    assert c["id"] in ids("created_after=" + (created - timedelta(seconds=1)).isoformat()
                          .replace("+00:00", "Z"))
    assert ids("created_before=2020-01-01T00:00:00Z") == []


@pytest.mark.parametrize("query,code", [
    ("limit=0", "invalid_limit"), ("limit=101", "invalid_limit"), ("limit=abc", "invalid_limit"),
    ("cursor=bogus", "invalid_cursor"), ("status=done", "validation_error"),
    ("created_after=tomorrow", "validation_error"), ("owner=someone", "validation_error"),
])
def test_listing_bad_params(stack, query, code):
    resp = call(stack, "GET", "/downloads?" + query, "alice")
    assert resp.status_code == 400 and error_code(resp) == code


def test_a_cursor_cannot_cross_into_another_users_listing(stack):
    for _ in range(3):
        stack.create("alice")
    cursor = call(stack, "GET", "/downloads?limit=1", "alice").json_body["next_cursor"]
    assert cursor
    resp = call(stack, "GET", f"/downloads?cursor={cursor}", "bob")
    assert resp.status_code == 400 and error_code(resp) == "invalid_cursor"


def test_admin_lists_everyone_and_filters_by_owner_and_tenant(stack):
    a, b, c = stack.create("alice"), stack.create("bob"), stack.create("carol")

    def ids(query=""):
        return {t["id"] for t in call(stack, "GET", "/downloads?" + query, "admin").json_body["items"]}

    assert ids() == {a["id"], b["id"], c["id"]}
    assert ids("owner=" + stack.users["bob"].sub) == {b["id"]}
    assert ids("tenant=globex") == {c["id"]}
    assert ids("tenant=acme&owner=" + stack.users["carol"].sub) == set()
    assert {t["id"] for t in call(stack, "GET", "/downloads", "alice").json_body["items"]} \
        == {a["id"]}


def test_listing_is_a_query_whose_reads_track_the_page(stack):
    """With many tasks of others in the table, a user's page reads only its own."""
    repo = TaskRepository()
    calls: list[str] = []
    conn = TaskModel._get_connection().connection
    for _ in range(3):
        stack.create("alice")
    for _ in range(15):
        stack.create("bob")
    for _ in range(15):
        stack.create("carol")
    conn.client.meta.events.register("before-call.dynamodb.*",
                                     lambda model, **_: calls.append(model.name))
    resp = call(stack, "GET", "/downloads?limit=2", "alice")
    assert len(resp.json_body["items"]) == 2
    assert "Scan" not in calls and calls.count("Query") == 1
    page = repo.query("by_owner", stack.users["alice"].sub, id_low=None, id_high=None,
                      filter_condition=None, limit=2, start_key=None, max_scanned=20)
    assert page.scanned == 2 and page.last_key is not None


def test_get_file_redirects_to_a_fresh_presigned_url(stack):
    task = stack.create(file_name="Ünïcødé 报表")
    stack.run_worker()
    done = stack.get(task["id"])
    assert done["status"] == "succeeded" and "X-Amz-Signature=" in done["url"]
    assert done["url_expires_at"].endswith("Z")
    resp = call(stack, "GET", f"/downloads/{task['id']}/file", "alice")
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert "X-Amz-Signature=" in location and "response-content-disposition" in location
    assert "UTF-8%27%27%25C3%259C" in location  # the RFC 5987 name travels in the URL


def url_lifetime(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


@pytest.mark.parametrize("body", [{}, {"parallelism": 2, "output": "parts"}])
def test_a_url_never_outlives_its_file(stack, body):
    """A task 60 s before its expiry gets URLs that end with it, not URL_TTL_SECONDS (900 s) later."""
    task = stack.create(**body)
    for _ in range(10):  # a parts build's plan, then its segments
        stack.run_worker()
    expires = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
    TaskModel(task["id"]).update(actions=[TaskModel.expires_at.set(expires)])
    done = stack.get(task["id"])
    assert done["status"] == "succeeded"
    urls = [f["url"] for f in [*done["files"], done["manifest"]]] if body else [done["url"]]
    assert urls and all(url_lifetime(u) <= 60 for u in urls)
    assert done["url_expires_at"] == done["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    if not body:
        resp = call(stack, "GET", f"/downloads/{task['id']}/file", "alice")
        assert resp.status_code == 302 and url_lifetime(resp.headers["Location"]) <= 60
    # far from its expiry, a URL gets the whole URL_TTL_SECONDS
    TaskModel(task["id"]).update(actions=[TaskModel.expires_at.set(expires + timedelta(days=1))])
    assert url_lifetime(stack.get(task["id"])["url"] or stack.get(task["id"])["files"][0]["url"]) == 900


def test_file_of_an_unfinished_task_is_409_and_expired_is_410(stack):
    task = stack.create()
    resp = call(stack, "GET", f"/downloads/{task['id']}/file", "alice")
    assert resp.status_code == 409 and error_code(resp) == "invalid_state"
    stack.run_worker()
    TaskModel(task["id"]).update(actions=[
        TaskModel.expires_at.set(datetime.now(UTC) - timedelta(minutes=1))])
    assert stack.get(task["id"])["status"] == "expired"
    assert stack.get(task["id"])["url"] is None
    resp = call(stack, "GET", f"/downloads/{task['id']}/file", "alice")
    assert resp.status_code == 410 and error_code(resp) == "expired"
    listed = call(stack, "GET", "/downloads?status=expired", "alice").json_body["items"]
    assert [t["id"] for t in listed] == [task["id"]]


def test_cancel_a_queued_task_at_once(stack):
    task = stack.create()
    resp = call(stack, "POST", f"/downloads/{task['id']}/cancel", "alice")
    assert resp.status_code == 202 and resp.json_body["status"] == "canceled"
    stack.run_worker()  # the late build message is a no-op
    assert stack.get(task["id"])["status"] == "canceled"
    assert [e["detail-type"] for e in stack.events()] == ["download.canceled"]
    again = call(stack, "POST", f"/downloads/{task['id']}/cancel", "alice")
    assert again.status_code == 409 and error_code(again) == "invalid_state"


def test_cancel_of_a_running_task_asks_the_worker(stack):
    task = stack.create()
    claim(task["id"])
    resp = call(stack, "POST", f"/downloads/{task['id']}/cancel", "alice")
    assert resp.status_code == 202 and resp.json_body["status"] == "canceling"
    assert call(stack, "POST", f"/downloads/{task['id']}/cancel", "alice").status_code == 202


def test_retry_only_from_failed_or_canceled(stack):
    task = stack.create()
    resp = call(stack, "POST", f"/downloads/{task['id']}/retry", "alice")
    assert resp.status_code == 409 and error_code(resp) == "invalid_state"
    call(stack, "POST", f"/downloads/{task['id']}/cancel", "alice")
    stack.drain()
    resp = call(stack, "POST", f"/downloads/{task['id']}/retry", "alice")
    assert resp.status_code == 202
    assert resp.json_body["status"] == "queued" and resp.json_body["attempts"] == 2
    assert resp.json_body["finished_at"] is None
    stack.run_worker()
    assert stack.get(task["id"])["status"] == "succeeded"
    resp = call(stack, "POST", f"/downloads/{task['id']}/retry", "alice")
    assert resp.status_code == 409


def test_delete_removes_task_and_object(stack):
    task = stack.create()
    stack.run_worker()
    key = TaskRepository().get(task["id"]).object_key
    s3 = boto3.client("s3")
    assert s3.head_object(Bucket="download-center-files", Key=key)["ContentLength"] > 0
    resp = call(stack, "DELETE", f"/downloads/{task['id']}", "alice")
    assert resp.status_code == 204
    assert s3.list_objects_v2(Bucket="download-center-files", Prefix=key).get("KeyCount") == 0
    assert call(stack, "GET", f"/downloads/{task['id']}", "alice").status_code == 404
    assert call(stack, "DELETE", f"/downloads/{task['id']}", "alice").status_code == 404


def test_delete_removes_the_file_of_a_task_that_knows_no_object_key(stack):
    """A build whose upload completed but whose final write failed left a file the task does not name."""
    task = create_then_drop_table(stack)
    stack.run_worker()
    stored = TaskRepository().get(task["id"])
    assert stored.status is Status.FAILED and stored.object_key is None
    s3 = boto3.client("s3")
    prefix = storage.task_prefix(stored.tenant, stored.id)
    key = storage.object_key(stored.tenant, stored.id, 1, "t.csv")
    s3.put_object(Bucket="download-center-files", Key=key, Body=b"id\n1\n")
    resp = call(stack, "DELETE", f"/downloads/{task['id']}", "alice")
    assert resp.status_code == 204
    assert s3.list_objects_v2(Bucket="download-center-files", Prefix=prefix)["KeyCount"] == 0


def test_delete_while_running_is_409(stack):
    task = stack.create()
    claim(task["id"])
    resp = call(stack, "DELETE", f"/downloads/{task['id']}", "alice")
    assert resp.status_code == 409 and error_code(resp) == "invalid_state"


def test_unknown_task_is_404_everywhere(stack):
    for method, path in PROTECTED[3:]:
        resp = call(stack, method, path.replace("X", "01JDQ4V8Z8S9Y6K1E6J3X2M7TQ"), "alice")
        assert resp.status_code == 404 and error_code(resp) == "not_found"
