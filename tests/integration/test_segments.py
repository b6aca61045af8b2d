"""Segmented builds against moto: one export built by many invocations (issue 10)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any

import boto3
import pytest

from chalicelib.adapters.tasks_repo import TaskRepository

from .conftest import SETTINGS, fast_worker

BUCKET = SETTINGS.files_bucket


def drive(stack, worker=None, rounds: int = 50) -> int:
    """Hand the queue's messages to the worker until none is left; how many it handled."""
    handled = 0
    for _ in range(rounds):
        records = stack.drain()
        if not records:
            return handled
        handled += len(records)
        result = (worker or fast_worker()).handle_batch(records)
        assert result == {"batchItemFailures": []}
    raise AssertionError("the queue never emptied")


def body_of(key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()


def keys_of(task_id: str) -> list[str]:
    page = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="downloads/")
    return sorted(o["Key"] for o in page.get("Contents", []) if f"/{task_id}/" in o["Key"])


def open_uploads() -> list[Any]:
    return boto3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def built(stack, **body: Any) -> tuple[dict[str, Any], Any]:
    created = stack.create(**body)
    drive(stack)
    return stack.get(created["id"]), TaskRepository().get(created["id"])


@pytest.mark.parametrize("fmt, extra", [("csv", {}), ("jsonl", {}),
                                        ("csv", {"bom": True, "delimiter": ";"})])
def test_a_single_object_from_segments_has_the_bytes_of_one_worker(stack, fmt, extra):
    params = {"rows": 20_000, "seed": 7, **extra}
    one, _ = built(stack, format=fmt, params=params, parallelism=1)
    many, task = built(stack, format=fmt, params=params, parallelism=4)
    assert many["status"] == "succeeded" and len(task.segments) == 4
    assert many["sha256"] == one["sha256"] and many["md5"] == one["md5"] and many["size"] == one["size"]
    data = body_of(task.object_key)
    assert hashlib.sha256(data).hexdigest() == many["sha256"]
    assert hashlib.md5(data).hexdigest() == many["md5"]
    assert many["progress"]["rows"] == 20_000 and many["progress"]["percent"] == 100.0
    assert many["progress"]["segments"] == {"total": 4, "succeeded": 4, "running": 0, "failed": 0}
    assert many["files"] is None and many["output"] == "single" and many["parallelism"] == 4
    # the segments' own objects are gone: only the file is left
    assert keys_of(task.id) == [task.object_key]
    assert not open_uploads()


def test_gzip_segments_are_members_of_one_gzip_file(stack):
    params = {"rows": 9_000, "seed": 3, "compression": "gzip"}
    one, t1 = built(stack, params=params)
    many, t4 = built(stack, params=params, parallelism=3)
    whole, parts = body_of(t1.object_key), body_of(t4.object_key)
    assert gzip.decompress(parts) == gzip.decompress(whole)
    assert hashlib.sha256(parts).hexdigest() == many["sha256"]


def test_segments_past_the_part_minimum_are_copied_on_s3s_side(stack):
    # about 3.3 MiB a segment with 4 segments: small ones are read and joined, the rest copied
    params = {"rows": 120_000, "seed": 5}
    one, _ = built(stack, format="jsonl", params=params, parallelism=1)
    many, task = built(stack, format="jsonl", params=params, parallelism=2)
    assert min(s.size for s in task.segments) > 5 * 1024 * 1024
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key=task.object_key)
    assert head["ETag"].strip('"').endswith("-2")  # one part per segment
    assert many["sha256"] == one["sha256"]


def test_parts_are_whole_files_in_order_with_a_manifest(stack):
    params = {"rows": 10_001, "seed": 2}
    one, t1 = built(stack, params=params)
    many, task = built(stack, params=params, parallelism=4, output="parts", file_name="export")
    assert many["status"] == "succeeded" and many["url"] is None and many["md5"] is None
    names = [f["name"] for f in many["files"]]
    assert names == [f"export-{n:05d}-of-00004.csv" for n in range(1, 5)]
    rows: list[dict[str, str]] = []
    for f in many["files"]:
        data = boto3.client("s3").get_object(Bucket=BUCKET, Key=next(
            x["key"] for x in task.files if x["name"] == f["name"]))["Body"].read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
        part = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))  # each with its header
        assert len(part) == f["rows"]
        rows += part
    whole = list(csv.DictReader(io.StringIO(body_of(t1.object_key).decode("utf-8"))))
    assert rows == whole
    assert many["size"] == sum(f["size"] for f in many["files"])
    manifest = json.loads(body_of(task.manifest["key"]))
    assert manifest["rows"] == 10_001 and manifest["files"] == [
        {k: f[k] for k in ("name", "size", "rows", "md5", "sha256")} for f in many["files"]]
    assert hashlib.sha256(body_of(task.manifest["key"])).hexdigest() == many["manifest"]["sha256"]


def test_the_file_route_points_a_parts_task_to_its_files(stack):
    created = stack.create(params={"rows": 100}, parallelism=2, output="parts")
    drive(stack)
    resp = stack.client.http.get(f"/downloads/{created['id']}/file",
                                 headers=stack.users["alice"].headers)
    assert resp.status_code == 409 and resp.json_body["error"]["code"] == "multiple_files"
    assert "files" in resp.json_body["error"]["message"]


def test_two_deliveries_of_one_segment_message_build_it_once(stack):
    created = stack.create(params={"rows": 3000}, parallelism=2)
    fast_worker().handle_batch(stack.drain())  # the coordinator: two segment messages
    records = stack.drain()
    assert len(records) == 2
    worker = fast_worker()
    seg_one = [r for r in records if json.loads(r["body"])["segment"] == 1]
    task = TaskRepository().get(created["id"])
    claimed = TaskRepository().claim_segment(task, 1, task.heartbeat_at)  # another worker has it
    assert claimed is not None
    worker.handle_batch(seg_one)  # the second delivery: not claimed, nothing built
    after = TaskRepository().get(created["id"])
    assert after.segments[0].lease == claimed.lease and after.segments_done == 0
    assert not [k for k in keys_of(task.id) if ".seg-00001" in k]
