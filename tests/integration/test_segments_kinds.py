"""Segmented builds of the kinds that read an AWS source, against moto (issue 10).

``dynamodb_table`` splits by parallel-scan segments, ``log_archive`` by time
slices, ``s3_bundle`` by key ranges. Each segmented export is compared with
the export one worker builds of the same source: the same rows (a scan's
segments come in another order, so dynamodb rows are compared sorted), the
same bytes where the writer is deterministic, and parts that read back whole.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import botocore.session
import openpyxl
import pytest

from chalicelib.adapters import aws
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.exporters import dynamodb_table, log_archive, s3_bundle
from chalicelib.exporters.dynamodb_table import SAMPLE_ITEMS
from local.seed import DEMO_TABLE, seed_demo_table

from .conftest import fast_worker
from .test_segments import body_of, drive

#: The shipped access policy opens log archives to admins only.
USER_FOR = {"log_archive": "admin"}


def export(stack, kind: str, params: dict[str, Any], fmt: str, **body: Any) -> tuple[dict[str, Any], Any]:
    """Create, build every message (coordinator, segments, finalizer), and read the task back."""
    user = USER_FOR.get(kind, "alice")
    created = stack.create(user, kind=kind, format=fmt, params=params, **body)
    drive(stack)
    task = stack.get(created["id"], user)
    assert task["status"] == "succeeded", task["error"]
    return task, TaskRepository().get(created["id"])


def parts_of(task) -> list[bytes]:
    """A parts task's files, in order, each checked against its recorded size."""
    out = []
    for f in task.files:
        data = body_of(f["key"])
        assert len(data) == f["size"]
        out.append(data)
    return out


def kinds(stack) -> dict[str, dict[str, Any]]:
    resp = stack.client.http.get("/kinds", headers=stack.users["admin"].headers)
    assert resp.status_code == 200, resp.body
    return {k["kind"]: k for k in resp.json_body["items"]}


def test_kinds_say_how_they_split(stack):
    catalogue = kinds(stack)
    assert catalogue["dynamodb_table"]["split"] == {
        "by": "parallel-scan segments", "max_segments": 32,
        "outputs": {"csv": ["single", "parts"], "jsonl": ["single", "parts"], "xlsx": ["parts"]}}
    assert catalogue["log_archive"]["split"] == {
        "by": "time slices", "max_segments": 32,
        "outputs": {"text": ["single", "parts"], "jsonl": ["single", "parts"]}}
    assert catalogue["s3_bundle"]["split"] == {
        "by": "key ranges", "max_segments": 32, "outputs": {"zip": ["parts"]}}


# -- dynamodb_table ------------------------------------------------------------------------------


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def header(data: bytes) -> list[str]:
    return next(csv.reader([data.split(b"\r\n", 1)[0].decode("utf-8")]))


def by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: str(r["id"]))


def seed_demo(rows: int) -> None:
    seed_demo_table(None, aws.region_name(), rows=rows)


@pytest.fixture
def scans() -> Iterator[list[dict[str, Any]]]:
    """The params of every Scan any DynamoDB client makes from now on (the exports' scan reader's too,
    which emits ``before-send`` as a client does: chalicelib/adapters/dynamodb_scan.py)."""
    seen: list[dict[str, Any]] = []
    original = botocore.session.Session.create_client

    def spy(self, *args, **kwargs):
        client = original(self, *args, **kwargs)
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("before-send.dynamodb.Scan",
                                        lambda request, **_: seen.append(json.loads(request.body)))
        return client

    aws.reset()
    botocore.session.Session.create_client = spy
    try:
        yield seen
    finally:
        botocore.session.Session.create_client = original
        aws.reset()


def test_a_table_in_three_scan_segments_is_one_csv_with_the_rows_of_one_worker(stack, scans):
    seed_demo(300)
    one, _ = export(stack, "dynamodb_table", {"table": DEMO_TABLE}, "csv", parallelism=1)
    scans.clear()
    many, task = export(stack, "dynamodb_table", {"table": DEMO_TABLE}, "csv", parallelism=3)
    assert many["progress"]["segments"] == {"total": 3, "succeeded": 3, "running": 0, "failed": 0}
    whole, composed = body_of(TaskRepository().get(one["id"]).object_key), body_of(task.object_key)
    assert composed.count(b"\r\nid,") == 0 and composed.split(b"\r\n", 1)[0] == whole.split(b"\r\n", 1)[0]
    assert by_id(csv_rows(composed)) == by_id(csv_rows(whole)) and len(csv_rows(composed)) == 300
    assert many["size"] == one["size"] and many["progress"]["rows"] == 300
    assert many["progress"]["total"] == 300 and many["progress"]["percent"] == 100.0  # ItemCount
    # one invocation a DynamoDB segment, each scanned alone: no thread fan-out inside a segment
    segmented = [p for p in scans if "TotalSegments" in p]
    assert segmented and {p["TotalSegments"] for p in segmented} == {3}
    assert {p["Segment"] for p in segmented} == {0, 1, 2}
    assert [p for p in scans if "TotalSegments" not in p] == [
        {"TableName": DEMO_TABLE}]  # the plan's sample of the columns, one page
    assert task.plan_shared["from"] == "sample" and task.plan_shared["keys"] == ["id"]


def test_a_filtered_table_in_segments_has_no_total_and_the_filtered_rows(stack):
    seed_demo(120)
    params = {"table": DEMO_TABLE, "filters": [{"attr": "country", "op": "eq", "value": "CN"}]}
    one, _ = export(stack, "dynamodb_table", params, "jsonl", parallelism=1)
    many, task = export(stack, "dynamodb_table", params, "jsonl", parallelism=3)
    lines = [json.loads(line) for line in body_of(task.object_key).decode("utf-8").splitlines()]
    whole = [json.loads(line) for line in body_of(TaskRepository().get(one["id"]).object_key)
             .decode("utf-8").splitlines()]
    assert lines and all(r["country"] == "CN" for r in lines) and by_id(lines) == by_id(whole)
    assert "total" not in many["progress"] and many["progress"]["rows"] == len(lines)


def test_parts_of_a_table_each_have_the_plans_header(stack):
    seed_demo(200)
    _, csv_task = export(stack, "dynamodb_table", {"table": DEMO_TABLE}, "csv", parallelism=3,
                         output="parts")
    parts = [csv_rows(p) for p in parts_of(csv_task)]
    headers = {tuple(p[0]) for p in parts if p}
    assert len(parts) == 3 and len(headers) == 1 and sum(map(len, parts)) == 200
    assert [len(p) for p in parts] == [f["rows"] for f in csv_task.files]

    _, xlsx_task = export(stack, "dynamodb_table", {"table": DEMO_TABLE}, "xlsx", parallelism=3,
                          output="parts")
    rows = 0
    for data in parts_of(xlsx_task):
        sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).active
        table = list(sheet.iter_rows(values_only=True))
        assert list(table[0]) == list(next(iter(headers)))
        rows += len(table) - 1
    assert rows == 200


def test_jsonl_with_all_columns_writes_whole_items_in_segments(stack):
    seed_sparse()
    params = {"table": DEMO_TABLE, "all_columns": True}
    one, _ = export(stack, "dynamodb_table", params, "jsonl", parallelism=1)
    many, task = export(stack, "dynamodb_table", params, "jsonl", parallelism=3)
    lines = [json.loads(line) for line in body_of(task.object_key).decode("utf-8").splitlines()]
    assert task.plan_shared == {"keys": ["id"], "from": "whole-items", "columns": []}
    assert by_id(lines) == by_id([json.loads(line) for line in body_of(
        TaskRepository().get(one["id"]).object_key).decode("utf-8").splitlines()])
    assert next(r for r in lines if r["id"] == f"s{SAMPLE_ITEMS + 59:04d}")["rare"] == "只在最后"
    assert all(list(r)[0] == "id" for r in lines) and many["warnings"] == []


def seed_sparse(rows: int = SAMPLE_ITEMS + 60, blob: int = 0) -> None:
    """``id`` and ``name`` everywhere; ``rare`` only on the last item, past the sample.
    ``blob`` bytes more an item make a scan of several 1 MB pages."""
    table = boto3.resource("dynamodb").create_table(
        TableName=DEMO_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    with table.batch_writer() as batch:
        for i in range(rows):
            item: dict[str, Any] = {"id": f"s{i:04d}", "name": f"Søren {i}", "n": Decimal(i)}
            if blob:
                item["blob"] = "x" * blob
            if i == rows - 1:
                item["rare"] = "只在最后"
            batch.put_item(Item=item)


def test_names_past_the_plans_sample_are_one_warning_from_all_segments(stack):
    seed_sparse()
    # one scan thread: moto then scans in insertion order, so a whole build's sample is the
    # first items, as the plan's is
    one, _ = export(stack, "dynamodb_table", {"table": DEMO_TABLE, "segments": 1}, "csv", parallelism=1)
    many, task = export(stack, "dynamodb_table", {"table": DEMO_TABLE}, "csv", parallelism=3)
    assert csv_rows(body_of(task.object_key))[0].keys() == {"id", "n", "name"}
    assert many["warnings"] == one["warnings"] and [w["code"] for w in many["warnings"]] == [
        "columns_left_out"]
    # the segment that had the item says so; the others have nothing to say
    assert sorted((s.notes or {}).get("left_n", 0) for s in task.segments) == [0, 0, 1]
    assert next(s.notes for s in task.segments if s.notes) == {"left": ["rare"], "left_n": 1}


def test_a_requested_column_no_segment_saw_is_the_one_workers_warning(stack):
    seed_demo(90)
    params = {"table": DEMO_TABLE, "columns": ["id", "nmae", "city"]}
    one, _ = export(stack, "dynamodb_table", params, "csv", parallelism=1)
    many, task = export(stack, "dynamodb_table", params, "csv", parallelism=3)
    assert many["warnings"] == one["warnings"] and len(many["warnings"]) == 1
    assert many["warnings"][0]["field"] == "params.columns[1]" and "'name'" in many["warnings"][0]["message"]
    assert [s.notes for s in task.segments] == [{"unseen": [1]}] * 3
    assert list(csv_rows(body_of(task.object_key))[0]) == ["id", "nmae", "city"]


def test_a_column_only_one_segment_saw_is_no_warning(stack):
    seed_sparse(40)
    params = {"table": DEMO_TABLE, "columns": ["id", "rare"]}
    many, task = export(stack, "dynamodb_table", params, "csv", parallelism=3)
    assert many["warnings"] == [] and sum(1 for s in task.segments if s.notes) == 2
    assert [r["rare"] for r in csv_rows(body_of(task.object_key)) if r["rare"]] == ["只在最后"]


def test_all_columns_in_csv_reads_the_names_once_in_the_plan(stack, scans):
    seed_sparse()
    many, task = export(stack, "dynamodb_table", {"table": DEMO_TABLE, "all_columns": True}, "csv",
                        parallelism=3)
    rows = csv_rows(body_of(task.object_key))
    assert list(rows[0]) == ["id", "n", "name", "rare"] and many["warnings"] == []
    assert task.plan_shared["from"] == "names" and len(rows) == SAMPLE_ITEMS + 60
    # the plan's pass (the whole build's scan threads), then one scan a segment
    assert {p.get("TotalSegments") for p in scans} == {4, 3}


def test_all_columns_past_the_plans_read_is_left_out_with_a_warning(stack, monkeypatch):
    """A table too large to read twice: the plan reads names for PLAN_READ_SECONDS (here one
    page), and what the segments find beyond them is a warning saying so."""
    monkeypatch.setattr(dynamodb_table, "PLAN_READ_SECONDS", 0.0)
    seed_sparse(24, blob=150_000)  # 3.6 MB: four 1 MB pages, "rare" on the last item
    many, task = export(stack, "dynamodb_table",
                        {"table": DEMO_TABLE, "all_columns": True, "segments": 1}, "csv", parallelism=3)
    assert task.plan_shared["from"] == "some-names"
    assert header(body_of(task.object_key)) == ["id", "blob", "n", "name"]
    (warning,) = many["warnings"]
    assert warning["code"] == "columns_left_out" and warning["message"].startswith("1 attribute(s)")
    assert "'rare'" in warning["message"] and "before the export was split" in warning["message"]
    assert "jsonl" in warning["message"]


def test_auto_plans_segments_from_the_item_count(stack, monkeypatch):
    seed_demo(120)
    # 120 items at 20 rows/s is 6 s of work; a worker with 8 s left plans 2 s segments: 3
    monkeypatch.setattr(dynamodb_table, "ROWS_PER_SECOND", {"csv": 20})
    created = stack.create(kind="dynamodb_table", format="csv", params={"table": DEMO_TABLE})
    coordinator = fast_worker(time_budget_margin_seconds=0)
    assert coordinator.handle_batch(stack.drain(), remaining_ms=lambda: 8_000) == {"batchItemFailures": []}
    assert len(TaskRepository().get(created["id"]).segments) == 3
    drive(stack)
    task = stack.get(created["id"])
    assert task["status"] == "succeeded" and task["progress"]["rows"] == 120
    assert task["parallelism"] == "auto" and task["progress"]["segments"]["total"] == 3


def test_a_table_gone_before_the_plan_fails_the_task_with_its_code(stack):
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName=DEMO_TABLE, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    created = stack.create(kind="dynamodb_table", params={"table": DEMO_TABLE}, parallelism=3)
    ddb.delete_table(TableName=DEMO_TABLE)
    drive(stack)
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "table_not_found"


# -- log_archive -----------------------------------------------------------------------------------

GROUP = "/download-center/demo"
#: CloudWatch (and moto) refuse events older than 14 days: the events are from yesterday.
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
HOUR_MS = 3_600_000


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def log_params(**extra: Any) -> dict[str, Any]:
    start, end = T0, T0 + timedelta(hours=1)
    return {"log_group": GROUP, "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"} | extra


def seed_logs(streams: dict[str, list[tuple[int, str]]]) -> None:
    """Each stream's (offset in ms from T0, message) events, in time order."""
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=GROUP)
    for stream, events in streams.items():
        cw.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        cw.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=[
            {"timestamp": ms(T0) + off, "message": msg} for off, msg in events])


#: Three slices of the hour start at T0, T0 + 20 min and T0 + 40 min: events on and next to
#: the cuts, and on both ends of the range (the last ms is in, the end is not).
CUTS = (0, HOUR_MS // 3, 2 * HOUR_MS // 3)
SLICES = list(zip(CUTS, (*CUTS[1:], HOUR_MS), strict=True))
EDGES = sorted({max(0, c + d) for c in (*CUTS, HOUR_MS) for d in (-1, 0, 1)} | {-5, 600_000, 3_000_000})


def test_a_range_in_three_time_slices_is_the_gzip_content_of_one_worker(stack):
    seed_logs({"web-1": [(off, f"event at +{off} ms: naïve 連線 😀") for off in EDGES]})
    for fmt in ("text", "jsonl"):
        one, t1 = export(stack, "log_archive", log_params(), fmt, parallelism=1)
        many, task = export(stack, "log_archive", log_params(), fmt, parallelism=3)
        assert [(s.spec["start"], s.spec["end"]) for s in task.segments] == [
            (ms(T0) + a, ms(T0) + b) for a, b in SLICES]
        composed, whole = body_of(task.object_key), body_of(t1.object_key)
        # one gzip member a slice, concatenated: the same text as one worker's single member
        assert gzip.decompress(composed) == gzip.decompress(whole)
        assert composed.count(b"\x1f\x8b\x08") >= 3 and many["size"] == len(composed)
        lines = gzip.decompress(composed).decode("utf-8").splitlines()
        in_range = [off for off in EDGES if 0 <= off < HOUR_MS]
        assert len(lines) == len(in_range) == many["progress"]["rows"] == one["progress"]["rows"]
        assert [s.rows for s in task.segments] == [
            sum(1 for off in in_range if a <= off < b) for a, b in SLICES]
        assert many["content_type"] == "application/gzip"
        assert many["file_name"].endswith({"text": ".log.gz", "jsonl": ".jsonl.gz"}[fmt])


def test_several_streams_in_slices_have_the_events_of_one_worker(stack):
    """moto returns a range's events stream by stream (CloudWatch interleaves them by time),
    so here only the set of lines is the same."""
    seed_logs({"web-1": [(off, f"web {off}") for off in range(0, HOUR_MS, 97_000)],
               "worker-ü": [(off, f"worker {off}") for off in range(5, HOUR_MS, 131_000)]})
    one, t1 = export(stack, "log_archive", log_params(), "jsonl", parallelism=1)
    many, task = export(stack, "log_archive", log_params(), "jsonl", parallelism=4)
    lines = gzip.decompress(body_of(task.object_key)).decode("utf-8").splitlines()
    assert sorted(lines) == sorted(gzip.decompress(body_of(t1.object_key)).decode("utf-8").splitlines())
    assert len(lines) == many["progress"]["rows"] and many["progress"]["segments"]["total"] == 4


def test_parts_of_a_range_are_gzip_files_of_their_slices(stack):
    seed_logs({"web-1": [(off, f"event {off}") for off in EDGES]})
    one, t1 = export(stack, "log_archive", log_params(), "text", parallelism=1)
    many, task = export(stack, "log_archive", log_params(), "text", parallelism=3, output="parts",
                        file_name="logs")
    assert [f["name"] for f in many["files"]] == [f"logs-{n:05d}-of-00003.log.gz" for n in (1, 2, 3)]
    texts = [gzip.decompress(p) for p in parts_of(task)]
    assert b"".join(texts) == gzip.decompress(body_of(t1.object_key))
    assert [t.count(b"\n") for t in texts] == [f["rows"] for f in many["files"]]


def test_auto_plans_time_slices_from_the_range(stack, monkeypatch):
    seed_logs({"web-1": [(off, f"event {off}") for off in EDGES]})
    # an hour at 6 s an hour; a worker with 8 s left plans 2 s slices: 3
    monkeypatch.setattr(log_archive, "SECONDS_PER_HOUR", 6.0)
    created = stack.create("admin", kind="log_archive", format="text", params=log_params())
    coordinator = fast_worker(time_budget_margin_seconds=0)
    assert coordinator.handle_batch(stack.drain(), remaining_ms=lambda: 8_000) == {"batchItemFailures": []}
    assert len(TaskRepository().get(created["id"]).segments) == 3
    drive(stack)
    assert stack.get(created["id"], "admin")["status"] == "succeeded"


def test_a_log_group_gone_before_the_plan_fails_the_task_once(stack):
    seed_logs({"web-1": [(10, "x")]})
    created = stack.create("admin", kind="log_archive", format="text", params=log_params(),
                           parallelism=3)
    boto3.client("logs").delete_log_group(logGroupName=GROUP)
    drive(stack)
    task = stack.get(created["id"], "admin")
    assert task["status"] == "failed" and task["error"]["code"] == "log_group_not_found"
    assert TaskRepository().get(created["id"]).segments == ()  # no segment was planned


# -- s3_bundle -----------------------------------------------------------------------------------

SOURCES = "download-center-sources"
#: a deep common path: the plan stores bounds relative to the prefix, and short ones
DEEP = "exports/2024/region=eu-west-1/customer=0000123456/"
BUNDLE = {
    **{f"{DEEP}daily/report-{i:03d}-报表.csv": f"day {i}, Zoë\n".encode() * (50 + 40 * i)
       for i in range(14)},
    f"{DEEP}big/archive.bin": bytes(range(256)) * 8_000,  # 2 MB: a range of its own
    f"{DEEP}sub/": b"",  # a folder placeholder: no entry
    "other/readme.txt": "read me 😀".encode(),
    "other/notes.txt": b"notes",
}


@pytest.fixture
def bucket(stack):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=SOURCES)
    for key, body in BUNDLE.items():
        s3.put_object(Bucket=SOURCES, Key=key, Body=body)
    return s3


def zip_entries(data: bytes) -> tuple[dict[str, bytes], list[dict[str, str]]]:
    """A zip's entries (but its manifest) and its MANIFEST.csv rows, checked whole."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None and archive.namelist()[-1] == "MANIFEST.csv"
    manifest = list(csv.DictReader(io.StringIO(archive.read("MANIFEST.csv").decode("utf-8"))))
    entries = {name: archive.read(name) for name in archive.namelist()[:-1]}
    assert [r["name"] for r in manifest if r["status"] == "ok"] == list(entries)
    return entries, manifest


def test_a_bundle_in_three_key_ranges_is_three_whole_zips_of_the_one_workers_entries(
        stack, bucket, monkeypatch):
    monkeypatch.setattr(s3_bundle, "OBJECT_WEIGHT_BYTES", 0)  # cut by bytes alone
    params = {"bucket": SOURCES, "keys": ["other/readme.txt", "other/notes.txt"], "prefix": DEEP}
    one, t1 = export(stack, "s3_bundle", params, "zip", parallelism=1)
    many, task = export(stack, "s3_bundle", params, "zip", parallelism=3, output="parts",
                        file_name="bundle")
    whole, _ = zip_entries(body_of(t1.object_key))
    assert [f["name"] for f in many["files"]] == [f"bundle-{n:05d}-of-00003.zip" for n in (1, 2, 3)]
    names: list[str] = []
    for f, data in zip(many["files"], parts_of(task), strict=True):
        entries, manifest = zip_entries(data)
        assert len(entries) == f["rows"] and entries
        for name, body in entries.items():
            assert body == whole[name]
        assert all(r["status"] == "ok" for r in manifest)
        names += list(entries)
    assert names == list(whole)  # every object once, in the bundle's order: explicit keys first
    assert many["progress"]["total"] == many["progress"]["rows"] == len(whole) == 17
    # balanced by bytes: the 2 MB object (the first under the prefix) is a range of its own
    assert [len(zip_entries(p)[0]) for p in parts_of(task)] == [2, 1, 14]
    for seg in task.segments:  # bounds, not key lists: small whatever the keys' length
        assert len(json.dumps(seg.spec, ensure_ascii=False).encode()) < 100, seg.spec
    assert task.segments[0].spec["keys"] == [0, 1]


def test_keys_that_appear_after_the_plan_are_in_exactly_one_part(stack, bucket):
    params = {"bucket": SOURCES, "prefix": DEEP}
    created = stack.create(kind="s3_bundle", format="zip", params=params, parallelism=3, output="parts")
    fast_worker().handle_batch(stack.drain())  # the coordinator plans; no segment is built yet
    specs = [s.spec for s in TaskRepository().get(created["id"]).segments]
    assert specs[0].get("after") is None and specs[-1].get("upto") is None
    assert [s.get("upto") for s in specs[:-1]] == [s.get("after") for s in specs[1:]]
    late = [f"{DEEP}a-first.txt", f"{DEEP}daily/report-005-报表.csv~", f"{DEEP}zz-last.txt",
            DEEP + specs[1]["after"]]  # a key equal to a bound belongs to the range it closes
    for key in late:
        bucket.put_object(Bucket=SOURCES, Key=key, Body=key.encode())
    drive(stack)
    task = TaskRepository().get(created["id"])
    seen: list[str] = []
    for data in parts_of(task):
        seen += [r["key"] for r in zip_entries(data)[1]]
    assert sorted(seen) == sorted({*late, *(k for k in BUNDLE if k.startswith(DEEP) and not k.endswith("/"))})
    assert len(seen) == len(set(seen))


def test_a_single_bundle_cannot_be_split(stack, bucket):
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps({
        "task_name": "zip", "kind": "s3_bundle", "params": {"bucket": SOURCES, "prefix": DEEP},
        "parallelism": 3}))
    assert resp.status_code == 400 and resp.json_body["error"]["code"] == "validation_error"
    assert [d["field"] for d in resp.json_body["error"]["details"]] == ["parallelism"]


def test_auto_parts_list_the_prefix_once_and_plan_from_its_bytes(stack, bucket, monkeypatch):
    # 2.1 MB and 15 objects at 1 MB/s and 0.05 s an object: 2.9 s; 8 s left plans 2 s ranges: 2
    monkeypatch.setattr(s3_bundle, "BYTES_PER_SECOND", 1024 * 1024)
    listed: list[dict[str, Any]] = []
    aws.client("s3").meta.events.register("provide-client-params.s3.ListObjectsV2",
                                          lambda params, **_: listed.append(dict(params)))
    created = stack.create(kind="s3_bundle", format="zip", params={"bucket": SOURCES, "prefix": DEEP},
                           output="parts")
    listed.clear()  # the create's own check
    coordinator = fast_worker(time_budget_margin_seconds=0)
    assert coordinator.handle_batch(stack.drain(), remaining_ms=lambda: 8_000) == {"batchItemFailures": []}
    assert len(listed) == 1  # estimate_seconds listed; plan used that listing
    assert len(TaskRepository().get(created["id"]).segments) == 2
    drive(stack)
    task = stack.get(created["id"])
    assert task["status"] == "succeeded" and len(task["files"]) == 2 and task["progress"]["rows"] == 15


def test_a_missing_key_fails_the_plan_or_is_skipped_in_its_part(stack, bucket):
    params = {"bucket": SOURCES, "keys": ["other/readme.txt", "other/gone.txt"]}
    created = stack.create(kind="s3_bundle", format="zip", params=params, parallelism=2, output="parts")
    drive(stack)
    failed = stack.get(created["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "object_not_found"
    assert "other/gone.txt" in failed["error"]["message"]

    many, task = export(stack, "s3_bundle", {**params, "on_missing": "skip"}, "zip", parallelism=2,
                        output="parts")
    manifests = [zip_entries(p)[1] for p in parts_of(task)]
    assert [[(r["key"], r["status"]) for r in m] for m in manifests] == [
        [("other/readme.txt", "ok")], [("other/gone.txt", "skipped")]]
