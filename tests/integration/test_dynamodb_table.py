"""dynamodb_table against moto: progress, the same bytes for the same data, columns, warnings."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import botocore.session
import openpyxl
import pytest

from chalicelib.adapters import aws
from chalicelib.adapters.dynamodb_scan import DynamoDBScan
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.exporters import BuildContext, get_exporter
from chalicelib.exporters.dynamodb_table import SAMPLE_ITEMS
from local.seed import COUNTRY_INDEX, DEMO_TABLE, seed_demo_table

from .conftest import SETTINGS

#: How long a gated scan waits for the others before the test fails (never reached when it passes).
PATIENCE = 30


def stored(task_id: str) -> bytes:
    task = TaskRepository().get(task_id)
    assert task is not None and task.object_key
    return boto3.client("s3").get_object(Bucket=SETTINGS.files_bucket, Key=task.object_key)["Body"].read()


def export(stack, params: dict[str, Any], fmt: str = "csv") -> tuple[dict[str, Any], bytes]:
    created = stack.create(kind="dynamodb_table", format=fmt, params=params)
    assert stack.run_worker() == {"batchItemFailures": []}
    task = stack.get(created["id"])
    assert task["status"] == "succeeded", task["error"]
    return task, stored(task["id"])


def header(data: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(data.decode("utf-8"))))


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def jsonl_rows(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def scan_params(request: Any) -> dict[str, Any]:
    """A Scan's parameters, from the request about to be sent (``before-send``)."""
    return json.loads(request.body)


def seed_demo(rows: int) -> None:
    """The local stack's demo table (``local.seed``), smaller: moto answers ~2 ms an item."""
    seed_demo_table(None, aws.region_name(), rows=rows)


@pytest.fixture
def scan_hooks() -> Iterator[Callable[[str, Callable[..., Any]], None]]:
    """Register botocore handlers on every DynamoDB client made from now on, the
    export's scan reader's (``chalicelib.adapters.dynamodb_scan``, which emits ``before-send``) included."""
    handlers: list[tuple[str, Callable[..., Any]]] = []
    original = botocore.session.Session.create_client

    def spy(self, *args, **kwargs):
        client = original(self, *args, **kwargs)
        if client.meta.service_model.service_name == "dynamodb":
            for event, handler in handlers:
                client.meta.events.register(event, handler)
        return client

    aws.reset()
    botocore.session.Session.create_client = spy
    try:
        yield lambda event, handler: handlers.append((event, handler))
    finally:
        botocore.session.Session.create_client = original
        aws.reset()


# -- progress --------------------------------------------------------------------------------------


def test_rows_are_counted_as_written_and_total_is_the_item_count(stack):
    seed_demo(150)
    ctx = BuildContext(SETTINGS)
    data = b""
    for chunk in get_exporter("dynamodb_table").stream({"table": DEMO_TABLE}, "jsonl", ctx):
        data += chunk
        # what a heartbeat between two chunks sees: the rows of the bytes so far
        assert ctx.rows == len(data.decode("utf-8").splitlines())
        assert ctx.total_rows == 150  # DescribeTable's ItemCount, from before the first row
    assert ctx.rows == 150

    task, data = export(stack, {"table": DEMO_TABLE})
    assert task["progress"] == {"rows": 150, "bytes": len(data), "total": 150, "percent": 100.0}


def test_a_filtered_export_shows_no_total(stack):
    """ItemCount only bounds a filtered export's rows from above: no percent that would crawl."""
    seed_demo(60)
    task, data = export(stack, {"table": DEMO_TABLE,
                                "filters": [{"attr": "country", "op": "eq", "value": "CN"}]})
    rows = csv_rows(data)
    assert rows and all(r["country"] == "CN" for r in rows)
    assert task["progress"] == {"rows": len(rows), "bytes": len(data)}


# -- the same data, the same bytes -----------------------------------------------------------------


def test_two_exports_of_the_demo_table_have_equal_sha256(stack, monkeypatch):
    """Whichever segment answers first: here segment 0 answers last, then segment 3 does."""
    seed_demo(200)
    segments = 4
    gate: dict[str, Any] = {}
    page = DynamoDBScan.page

    def gated(self, request):
        segment = request.get("Segment")
        if segment == gate["segment"]:
            assert gate["others_done"].wait(PATIENCE)
        answer = page(self, request)
        if segment not in (None, gate["segment"]):
            with gate["lock"]:
                gate["answered"] += 1
                if gate["answered"] == segments - 1:
                    gate["others_done"].set()
        return answer

    monkeypatch.setattr(DynamoDBScan, "page", gated)
    files = []
    for last in (0, 3):
        gate.update(segment=last, others_done=threading.Event(), lock=threading.Lock(), answered=0)
        task, data = export(stack, {"table": DEMO_TABLE, "segments": segments})
        assert gate["others_done"].is_set()  # the segment did answer last
        files.append((task["sha256"], data))
    (first_sha, first), (second_sha, second) = files
    assert first_sha == hashlib.sha256(first).hexdigest()
    assert first_sha == second_sha and first == second
    assert sorted(r["id"] for r in csv_rows(first)) == [f"u{i:05d}" for i in range(1, 201)]


def test_closing_an_export_stops_every_scan_thread(stack):
    seed_demo(60)
    before = threading.active_count()
    chunks = get_exporter("dynamodb_table").stream({"table": DEMO_TABLE, "segments": 4}, "csv",
                                                   BuildContext(SETTINGS))
    next(chunks)
    chunks.close()  # what a cancel does to the build's stream
    assert threading.active_count() == before


# -- columns ---------------------------------------------------------------------------------------


def test_without_columns_the_key_attributes_come_first_then_the_others_sorted(stack):
    seed_demo(60)
    _, table_csv = export(stack, {"table": DEMO_TABLE})
    names = header(table_csv)
    assert names[0] == "id" and names[1:] == sorted(names[1:])
    assert {"name", "email", "country"} <= set(names)

    _, index_csv = export(stack, {"table": DEMO_TABLE, "index": COUNTRY_INDEX})
    names = header(index_csv)
    assert names[:3] == ["id", "country", "signup_date"] and names[3:] == sorted(names[3:])

    _, lines = export(stack, {"table": DEMO_TABLE}, fmt="jsonl")
    assert all(list(row) == header(table_csv) for row in jsonl_rows(lines))


def seed_sparse(rows: int = SAMPLE_ITEMS + 60) -> None:
    """``id`` and ``name`` everywhere; ``rare`` only on the last item, past the sample."""
    table = boto3.resource("dynamodb").create_table(
        TableName=DEMO_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    with table.batch_writer() as batch:
        for i in range(rows):
            item: dict[str, Any] = {"id": f"s{i:04d}", "name": f"Søren {i}", "n": Decimal(i)}
            if i == rows - 1:
                item["rare"] = "只在最后"
            batch.put_item(Item=item)


def test_attributes_past_the_sample_are_left_out_with_a_warning(stack):
    seed_sparse()
    # one segment: moto then scans in insertion order, so the sample is the first items
    task, data = export(stack, {"table": DEMO_TABLE, "segments": 1})
    assert header(data) == ["id", "n", "name"]
    assert [w["code"] for w in task["warnings"]] == ["columns_left_out"]
    assert task["warnings"][0]["field"] == "params.columns"
    assert "'rare'" in task["warnings"][0]["message"] and "all_columns" in task["warnings"][0]["message"]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_all_columns_reads_every_attribute_name_first(stack, scan_hooks, fmt):
    seed_sparse()
    scans: list[dict[str, Any]] = []
    scan_hooks("before-send.dynamodb.Scan", lambda request, **_: scans.append(scan_params(request)))
    task, data = export(stack, {"table": DEMO_TABLE, "segments": 1, "all_columns": True}, fmt=fmt)
    if fmt == "csv":
        names, rows = header(data), csv_rows(data)
        last = rows[-1]
    else:
        sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).active
        table = [[("" if v is None else str(v)) for v in row] for row in sheet.iter_rows(values_only=True)]
        names, last = table[0], dict(zip(table[0], table[-1], strict=True))
    assert names == ["id", "n", "name", "rare"]
    assert last["rare"] == "只在最后" and task["warnings"] == []
    assert task["progress"]["rows"] == SAMPLE_ITEMS + 60
    # the cost: a whole first pass, then the export's own
    starts = [p for p in scans if "ExclusiveStartKey" not in p]
    assert len(starts) == 2 and len(scans) >= 2


def test_all_columns_in_jsonl_writes_each_item_whole_in_one_pass(stack, scan_hooks):
    seed_sparse()
    scans: list[dict[str, Any]] = []
    scan_hooks("before-send.dynamodb.Scan", lambda request, **_: scans.append(scan_params(request)))
    task, data = export(stack, {"table": DEMO_TABLE, "segments": 1, "all_columns": True}, fmt="jsonl")
    rows = jsonl_rows(data)
    assert [list(r) for r in rows[:2]] == [["id", "n", "name"]] * 2  # no invented nulls
    assert list(rows[-1]) == ["id", "n", "name", "rare"] and rows[-1]["rare"] == "只在最后"
    assert len([p for p in scans if "ExclusiveStartKey" not in p]) == 1
    assert task["warnings"] == []


def test_a_requested_column_no_item_has_is_a_warning_on_the_task(stack):
    seed_demo(60)
    task, data = export(stack, {"table": DEMO_TABLE, "columns": ["id", "nmae", "city"]})
    assert header(data) == ["id", "nmae", "city"]
    assert all(r["nmae"] == "" for r in csv_rows(data))
    assert task["warnings"] == [{
        "code": "column_not_found", "field": "params.columns[1]",
        "message": f"No exported item, and none of the first {SAMPLE_ITEMS} items of the source, "
                   "has the attribute 'nmae', so its column is empty. Did you mean 'name'?",
    }]
    events = [e for e in stack.events() if e["detail"]["id"] == task["id"]]
    assert events[0]["detail"]["warnings"] == task["warnings"]  # for the services that listen too


def test_a_column_the_filter_left_empty_is_no_typo(stack):
    seed_sparse(20)
    boto3.resource("dynamodb").Table(DEMO_TABLE).put_item(Item={"id": "s9999", "rare": "x"})
    task, data = export(stack, {"table": DEMO_TABLE, "columns": ["id", "rare"],
                                "filters": [{"attr": "id", "op": "eq", "value": "s0001"}]})
    assert csv_rows(data) == [{"id": "s0001", "rare": ""}]
    assert task["warnings"] == []


def test_columns_and_all_columns_together_are_refused_at_create(stack):
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps({
        "task_name": "both", "kind": "dynamodb_table",
        "params": {"table": DEMO_TABLE, "columns": ["id"], "all_columns": True}}))
    assert resp.status_code == 400, resp.body
    error = resp.json_body["error"]
    assert error["code"] == "validation_error"
    assert {"field": "params.all_columns",
            "issue": "cannot be true together with params.columns; give one or the other"} in error["details"]
    assert stack.drain() == []
