"""The SQS worker against moto: builds, failures, cancel, duplicates, bad messages."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import boto3
import pytest

from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.exporters import REGISTRY, RowExporter, register
from chalicelib.task import Status

from .conftest import SETTINGS, create_then_drop_table, fast_worker

BUCKET = "download-center-files"


def stored(task_id):
    task = TaskRepository().get(task_id)
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=task.object_key)
    return task, body, body["Body"].read()


def test_demo_csv_build_records_size_checksums_and_headers(stack):
    created = stack.create(task_name="演示", file_name="naïve 报表", params={"rows": 3000, "seed": 1})
    assert stack.run_worker() == {"batchItemFailures": []}
    task, obj, data = stored(created["id"])
    assert task.status is Status.SUCCEEDED
    assert task.size == len(data) == obj["ContentLength"]
    assert task.md5 == hashlib.md5(data).hexdigest()
    assert task.sha256 == hashlib.sha256(data).hexdigest()
    assert obj["ContentType"] == "text/csv; charset=utf-8"
    assert obj["ContentDisposition"].endswith("filename*=UTF-8''na%C3%AFve%20%E6%8A%A5%E8%A1%A8.csv")
    # one key per build (its lease): a superseded build can only touch its own file
    assert task.object_key == f"downloads/acme/{task.id}/1/naïve 报表.csv"
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert len(rows) == 3000 and rows[0]["id"] == "1"
    assert task.progress == {"rows": 3000, "bytes": len(data), "total": 3000, "percent": 100.0}
    resource = stack.get(created["id"])
    assert resource["started_at"] and resource["finished_at"] and resource["expires_at"]
    events = stack.events()
    assert [e["detail-type"] for e in events] == ["download.succeeded"]
    assert events[0]["source"] == "download-center" and events[0]["detail"]["id"] == task.id
    assert "url" not in events[0]["detail"] and events[0]["detail"]["sha256"] == task.sha256


def test_multipart_upload_for_files_larger_than_a_part(stack):
    created = stack.create(format="jsonl", params={"rows": 90_000})
    worker = fast_worker(part_size_bytes=5 * 1024 * 1024)
    stack.run_worker(worker)
    task, obj, data = stored(created["id"])
    assert task.size == len(data) > 10 * 1024 * 1024
    assert obj["ETag"].strip('"').endswith("-3")  # three parts
    assert task.sha256 == hashlib.sha256(data).hexdigest()
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 90_000 and json.loads(lines[-1])["id"] == 90_000


def seed_table(name="demo-users", rows=250):
    ddb = boto3.resource("dynamodb")
    table = ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "city", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[{"IndexName": "by_city",
                                 "KeySchema": [{"AttributeName": "city", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "ALL"}}],
    )
    with table.batch_writer() as batch:
        for i in range(rows):
            batch.put_item(Item={"id": f"u{i:04d}", "name": f"Zoë 王 {i}", "age": Decimal(i % 90),
                                 "city": ["上海", "Zürich"][i % 2], "tags": {"a", "b"}})
    return table


def build_table_export(stack, params, fmt="csv"):
    created = stack.create(kind="dynamodb_table", format=fmt, params=params)
    assert stack.run_worker() == {"batchItemFailures": []}
    return TaskRepository().get(created["id"])


def test_dynamodb_table_export_with_columns_and_filters(stack):
    seed_table()
    task = build_table_export(stack, {"table": "demo-users", "columns": ["id", "name", "age"],
                                      "filters": [{"attr": "age", "op": "between", "value": [10, 19]},
                                                  {"attr": "city", "op": "eq", "value": "Zürich"}]})
    assert task.status is Status.SUCCEEDED, task.error
    _, _, data = stored(task.id)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert rows and set(rows[0]) == {"id", "name", "age"}
    assert all(10 <= int(r["age"]) <= 19 for r in rows)
    expected = sum(1 for i in range(250) if 10 <= i % 90 <= 19 and i % 2 == 1)
    assert len(rows) == expected == task.progress["rows"]


@pytest.mark.parametrize("op,value,check", [
    ("ne", "Zürich", lambda r: r["city"] != "Zürich"),
    ("lt", 5, lambda r: r["age"] < 5), ("lte", 5, lambda r: r["age"] <= 5),
    ("gt", 85, lambda r: r["age"] > 85), ("gte", 85, lambda r: r["age"] >= 85),
    ("begins_with", "u000", lambda r: r["id"].startswith("u000")),
    ("contains", "王 1", lambda r: "王 1" in r["name"]),
    ("in", ["u0001", "u0002"], lambda r: r["id"] in ("u0001", "u0002")),
])
def test_dynamodb_filter_operators(stack, op, value, check):
    seed_table(rows=120)
    attr = {"ne": "city", "begins_with": "id", "contains": "name", "in": "id"}.get(op, "age")
    task = build_table_export(stack, {"table": "demo-users",
                                      "filters": [{"attr": attr, "op": op, "value": value}]},
                              fmt="jsonl")
    assert task.status is Status.SUCCEEDED, task.error
    rows = [json.loads(line) for line in stored(task.id)[2].decode("utf-8").splitlines()]
    assert rows and all(check(r) for r in rows)
    assert len(rows) == sum(1 for i in range(120) if check(
        {"id": f"u{i:04d}", "name": f"Zoë 王 {i}", "age": i % 90, "city": ["上海", "Zürich"][i % 2]}))
    assert rows[0]["tags"] == ["a", "b"]


def test_dynamodb_index_export(stack):
    seed_table(rows=40)
    task = build_table_export(stack, {"table": "demo-users", "index": "by_city"}, fmt="jsonl")
    assert task.status is Status.SUCCEEDED and task.progress["rows"] == 40


@pytest.mark.parametrize("segments", [1, 4])
def test_dynamodb_export_reads_page_by_page_in_segments(stack, segments):
    table = seed_table(rows=0)
    big = "x" * 3000
    with table.batch_writer() as batch:
        for i in range(1200):  # ~3.6 MB: several 1 MB scan pages
            batch.put_item(Item={"id": f"p{i}", "blob": big})
    scans: list[dict] = []
    boto3.DEFAULT_SESSION = None  # watch every client made from now on, the scan reader's too
    import botocore.session

    original = botocore.session.Session.create_client

    def spy(self, *args, **kwargs):
        client = original(self, *args, **kwargs)
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("before-send.dynamodb.Scan",
                                        lambda request, **_: scans.append(json.loads(request.body)))
        return client

    from chalicelib.adapters import aws
    aws.reset()
    botocore.session.Session.create_client = spy
    try:
        task = build_table_export(stack, {"table": "demo-users", "columns": ["id"],
                                          "segments": segments})
    finally:
        botocore.session.Session.create_client = original
    assert task.status is Status.SUCCEEDED and task.progress["rows"] == 1200
    ids = {r["id"] for r in csv.DictReader(io.StringIO(stored(task.id)[2].decode("utf-8")))}
    assert ids == {f"p{i}" for i in range(1200)}
    assert len(scans) >= max(2, segments)  # page by page: never the whole table at once
    assert {p.get("Segment") for p in scans} == (set(range(4)) if segments == 4 else {None})


def build_requested(stack, params):
    """A task asked for by another service's request message, which skips the API's create checks."""
    request = {"type": "download.request", "version": 1, "request": {
        "task_name": "t", "kind": "dynamodb_table", "params": params,
        "owner": stack.users["alice"].sub, "tenant": "acme", "idempotency_key": "k"}}
    boto3.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(request))
    assert stack.run_worker() == {"batchItemFailures": []}
    (task,) = stack.client.http.get("/downloads", headers=stack.users["alice"].headers).json_body["items"]
    return TaskRepository().get(task["id"])


@pytest.mark.parametrize("params,code", [
    ({"table": "demo-users", "index": "nope"}, "index_not_found"),
    ({"table": "demo-users"}, "table_not_found"),
])
def test_source_errors_fail_the_task_with_a_user_facing_error(stack, params, code):
    """The API refuses these at create; a request message is only checked by its build."""
    if code != "table_not_found":
        seed_table(rows=5)
    task = build_requested(stack, params)
    assert task.status is Status.FAILED and task.error.code == code and task.error.message
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert [e["detail-type"] for e in stack.events()] == ["download.failed"]
    assert stack.get(task.id)["error"]["code"] == code


def test_a_table_dropped_after_create_fails_table_not_found(stack):
    created = create_then_drop_table(stack)
    assert stack.run_worker() == {"batchItemFailures": []}
    task = TaskRepository().get(created["id"])
    assert task.status is Status.FAILED and task.error.code == "table_not_found"


class Exploding(RowExporter):
    kind = "test_exploding"
    title = "raises half way"
    params_schema = {"type": "object"}

    def open(self, params, ctx):
        def rows():
            yield {"a": 1}
            raise RuntimeError("secret internals: db password is hunter2")
        return ["a"], rows()


@pytest.fixture
def exploding():
    register(Exploding())
    yield
    REGISTRY.pop("test_exploding")


def test_unexpected_error_is_internal_error_without_details(stack, exploding, caplog):
    created = stack.create(kind="test_exploding", params={})
    stack.run_worker()
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "internal_error"
    assert "hunter2" not in json.dumps(task)
    assert "hunter2" in caplog.text  # the details are in the logs only


def test_duplicate_delivery_builds_once(stack):
    created = stack.create()
    records = stack.drain()
    from app import build_worker
    build_worker({"Records": records + records}, None)
    build_worker({"Records": records}, None)
    assert stack.get(created["id"])["status"] == "succeeded"
    assert [e["detail-type"] for e in stack.events()] == ["download.succeeded"]


def test_late_delivery_never_overwrites_a_terminal_state(stack):
    created = create_then_drop_table(stack)
    records = stack.drain()
    from app import build_worker
    build_worker({"Records": records}, None)
    assert stack.get(created["id"])["status"] == "failed"
    build_worker({"Records": records}, None)
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["attempts"] == 1


def test_malformed_messages_go_to_the_dead_letter_queue_without_blocking(stack, caplog):
    good = stack.create()
    records = stack.drain()
    bad = [
        {"messageId": "m-json", "receiptHandle": "r", "body": "{oops"},
        {"messageId": "m-type", "receiptHandle": "r", "body": '{"type": "download.zap"}'},
        {"messageId": "m-req", "receiptHandle": "r",
         "body": json.dumps({"type": "download.request", "version": 1,
                             "request": {"task_name": "t", "kind": "nope", "owner": "u"}})},
    ]
    from app import build_worker
    result = build_worker({"Records": bad[:2] + records + bad[2:]}, None)
    assert result == {"batchItemFailures": []}
    assert stack.get(good["id"])["status"] == "succeeded"
    dead = {json.loads(r["body"])["message_id"]: json.loads(r["body"])
            for r in stack.drain(stack.dlq_url)}
    assert set(dead) == {"m-json", "m-type", "m-req"}
    assert dead["m-json"]["body"] == "{oops" and "JSON" in dead["m-json"]["reason"]
    assert "m-type" in caplog.text and "dead-letter" in caplog.text


def test_infrastructure_failure_reports_only_that_message_for_retry(stack):
    stack.create()
    records = stack.drain()
    boto3.client("dynamodb").delete_table(TableName=SETTINGS.tasks_table)
    from app import build_worker
    bad = {"messageId": "bad", "receiptHandle": "r", "body": "x"}
    result = build_worker({"Records": records + [bad]}, None)
    assert result == {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]}


def request_message(key="crm-42", **overrides):
    request = {"task_name": "CRM 导出", "kind": "demo", "format": "jsonl",
               "params": {"rows": 7}, "owner": "alice-sub", "owner_name": "alice",
               "tenant": "acme", "idempotency_key": key} | overrides
    return {"type": "download.request", "version": 1, "request": request}


def send(stack, body):
    boto3.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(body))


def test_download_request_creates_the_task_once_per_key(stack):
    alice = stack.users["alice"]
    send(stack, request_message(owner=alice.sub))
    send(stack, request_message(owner=alice.sub))
    envelope = {"version": "0", "id": "e1", "detail-type": "download.request", "source": "crm",
                "detail": request_message(owner=alice.sub)["request"]}
    send(stack, envelope)
    assert stack.run_worker() == {"batchItemFailures": []}
    listed = stack.client.http.get("/downloads", headers=alice.headers).json_body["items"]
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert listed[0]["task_name"] == "CRM 导出" and listed[0]["file_name"].endswith(".jsonl")
    assert [e["detail-type"] for e in stack.events()] == ["download.succeeded"]
    # a different body under the same key is refused into the dead-letter queue
    send(stack, request_message(owner=alice.sub, task_name="other"))
    stack.run_worker()
    assert len(stack.drain(stack.dlq_url)) == 1


# -- issue 19, section 1: who may ask the queue for what ----------------------------------------

#: on conftest's LOG_GROUPS allow-list; the shipped policy opens log_archive to admins only
LOG_GROUP = "/download-center/demo"


def log_group_with_an_event() -> dict:
    """A log group with one event of yesterday, and the params of a log_archive that reads it."""
    at = datetime.now(UTC) - timedelta(days=1)
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=LOG_GROUP)
    cw.create_log_stream(logGroupName=LOG_GROUP, logStreamName="s")
    cw.put_log_events(logGroupName=LOG_GROUP, logStreamName="s", logEvents=[
        {"timestamp": int(at.timestamp() * 1000), "message": "payroll: alice 9000"}])
    return {"log_group": LOG_GROUP, "start": (at - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}


def every_task(stack) -> list[dict]:
    """Every task, as an admin lists them."""
    resp = stack.client.http.get("/downloads", headers=stack.users["admin"].headers)
    assert resp.status_code == 200, resp.body
    return resp.json_body["items"]


def dead_letters(stack) -> list[dict]:
    return [json.loads(r["body"]) for r in stack.drain(stack.dlq_url)]


def stored_keys() -> list[str]:
    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]


@pytest.mark.parametrize("kind,params,code_words", [
    ("log_archive", None, "export kind 'log_archive'"),  # admins only, and no group declared
    ("dynamodb_table", {"table": "payroll"}, "table 'payroll'"),  # off the deployment's allow-list
])
def test_a_forged_request_for_another_user_and_tenant_is_held_to_the_access_policy(
        stack, kind, params, code_words):
    """Issue 19: a sender named alice's sub, another tenant and log_archive, and she got a link to the logs.

    The policy decides as for POST /downloads: nothing is created, and the
    message goes to the dead-letter queue saying why.
    """
    params = params or log_group_with_an_event()
    alice = stack.users["alice"]
    send(stack, request_message(kind=kind, format="jsonl", params=params, owner=alice.sub,
                                owner_name="alice", tenant="globex"))
    assert stack.run_worker() == {"batchItemFailures": []}
    (dead,) = dead_letters(stack)
    assert dead["code"] == "forbidden" and code_words in dead["reason"]
    assert json.loads(dead["body"])["request"]["owner"] == alice.sub
    assert every_task(stack) == [] and stored_keys() == []
    assert [e["detail-type"] for e in stack.events()] == []


def test_a_request_is_allowed_what_the_groups_its_sender_declares_are_allowed(stack):
    """The other side of the policy: a sender trusted to say the owner is an admin gets an admin's kinds."""
    admin = stack.users["admin"]
    send(stack, request_message(kind="log_archive", format="jsonl", params=log_group_with_an_event(),
                                owner=admin.sub, owner_name="admin", tenant="acme", groups=["admin"]))
    assert stack.run_worker() == {"batchItemFailures": []}
    (task,) = every_task(stack)
    assert task["status"] == "succeeded" and task["kind"] == "log_archive" and task["url"]
    assert dead_letters(stack) == []


@pytest.mark.parametrize("tenant", ["acme/{alice}", "..", "acme/../globex", "acme\x1b[31m"])
def test_a_tenant_that_is_a_path_is_refused_and_leaves_the_others_files_alone(stack, tenant):
    """Issue 19: a tenant of acme/<alice's task id> wrote under her task's prefix, and her delete took it."""
    alice = stack.users["alice"]
    mine = stack.create()
    stack.run_worker()
    (key,) = stored_keys()
    assert key.startswith(f"downloads/acme/{mine['id']}/")
    send(stack, request_message(owner=stack.users["bob"].sub, owner_name="bob",
                                tenant=tenant.format(alice=mine["id"])))
    assert stack.run_worker() == {"batchItemFailures": []}
    (dead,) = dead_letters(stack)
    assert dead["code"] == "invalid_message" and dead["reason"].startswith("request.tenant must be")
    assert [t["id"] for t in every_task(stack)] == [mine["id"]]
    assert stored_keys() == [key]
    stack.events()
    resp = stack.client.http.delete(f"/downloads/{mine['id']}", headers=alice.headers)
    assert resp.status_code == 204 and stored_keys() == []


def test_an_eventbridge_event_of_another_detail_type_is_no_request(stack):
    """Issue 19: any event a rule routed to the queue was read as a request, whatever its detail-type."""
    alice = stack.users["alice"]
    envelope = {"version": "0", "id": "e2", "detail-type": "Order Shipped", "source": "shop",
                "detail": request_message(owner=alice.sub)["request"]}
    send(stack, envelope)
    assert stack.run_worker() == {"batchItemFailures": []}
    (dead,) = dead_letters(stack)
    assert dead["code"] == "invalid_message" and "'Order Shipped'" in dead["reason"]
    assert every_task(stack) == [] and stored_keys() == []


def test_cancel_while_running_aborts_the_upload_and_leaves_no_object(stack):
    created = stack.create(params={"rows": 5_000_000})
    records = stack.drain()
    # the deployment's own interval (2 s): the claim is "notices within 5 s"
    worker = fast_worker(part_size_bytes=5 * 1024 * 1024)
    assert worker.settings.progress_interval_seconds == 2
    thread = threading.Thread(target=worker.handle_batch, args=(records,))
    thread.start()
    deadline = time.monotonic() + 30
    while stack.get(created["id"])["progress"].get("bytes", 0) < 6 * 1024 * 1024:
        assert time.monotonic() < deadline, "the build never got going"
        time.sleep(0.05)
    resp = stack.client.http.post(f"/downloads/{created['id']}/cancel",
                                  headers=stack.users["alice"].headers)
    assert resp.status_code == 202 and resp.json_body["status"] == "canceling"
    asked = time.monotonic()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 5
    task = stack.get(created["id"])
    assert task["status"] == "canceled" and task["url"] is None
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert [e["detail-type"] for e in stack.events()] == ["download.canceled"]


def test_time_budget_ends_the_task_cleanly(stack):
    # one worker, asked for: "auto" would split this export for such a short budget
    created = stack.create(params={"rows": 2_000_000}, parallelism=1)
    records = stack.drain()
    worker = fast_worker(progress_interval_seconds=0.1, time_budget_margin_seconds=30)
    started = time.monotonic()
    # the Lambda context says 31 s are left: the margin is hit within a second
    worker.handle_batch(records, lambda: int((31 - (time.monotonic() - started)) * 1000))
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_file_past_the_part_limit_fails_too_large_and_leaves_nothing(stack, monkeypatch):
    from chalicelib.adapters import storage

    monkeypatch.setattr(storage, "MAX_PARTS", 2)
    created = stack.create(params={"rows": 200_000})  # ~14 MB: a third 5 MiB part is needed
    stack.run_worker(fast_worker(part_size_bytes=5 * 1024 * 1024))
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "too_large"
    assert "PART_SIZE_MB" in task["error"]["message"]
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_progress_is_visible_while_running_and_its_writes_are_throttled(stack):
    from chalicelib.adapters.tasks_repo import TaskModel

    created = stack.create(params={"rows": 1_000_000})
    records = stack.drain()
    worker = fast_worker(progress_interval_seconds=0.5)
    writes: list[float] = []
    TaskModel._get_connection().connection.client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem", lambda **_: writes.append(time.monotonic()))
    started = time.monotonic()
    thread = threading.Thread(target=worker.handle_batch, args=(records,))
    thread.start()
    samples = []
    while thread.is_alive():
        samples.append(stack.get(created["id"])["progress"])
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    running = [p for p in samples if 0 < p.get("rows", 0) < 1_000_000]
    assert len(running) >= 2, samples
    assert all(p["total"] == 1_000_000 and 0 < p["percent"] < 100 and p["bytes"] > 0 for p in running)
    assert [p["rows"] for p in running] == sorted(p["rows"] for p in running)
    assert stack.get(created["id"])["progress"]["percent"] == 100.0
    # one write per interval at most, plus the claim and the final state
    assert len(writes) <= elapsed / 0.5 + 3
