"""s3_bundle, log_archive and the documented custom kinds, end to end under moto.

Each output is read back with an independent reader (zipfile, gzip, csv,
json) from the object the worker stored. The allow-lists come from
conftest's environment: buckets ``download-center-sources`` and
``download-center-missing``, log groups ``/download-center/demo`` and
``/download-center/missing`` (the ``missing`` ones only created by the tests
that remove them between create and build).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import types
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from chalicelib.adapters.aws import client
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.exporters import REGISTRY, log_archive, s3_bundle
from chalicelib.task import Status

from .conftest import fast_worker

FILES = "download-center-files"
SOURCES = "download-center-sources"
GROUP = "/download-center/demo"


def stored(task_id: str) -> tuple[object, dict, bytes]:
    task = TaskRepository().get(task_id)
    assert task is not None and task.status is Status.SUCCEEDED, task and task.error
    obj = boto3.client("s3").get_object(Bucket=FILES, Key=task.object_key)
    data = obj["Body"].read()
    assert task.size == len(data) and task.sha256 == hashlib.sha256(data).hexdigest()
    assert task.md5 == hashlib.md5(data).hexdigest()
    return task, obj, data


#: The shipped access policy opens log archives to admins only.
USER_FOR = {"log_archive": "admin"}


def build(stack, kind: str, params: dict, fmt: str | None = None, worker=None, **body) -> dict:
    extra = {"format": fmt} if fmt else {}
    created = stack.create(USER_FOR.get(kind, "alice"), kind=kind, params=params, **extra, **body)
    assert stack.run_worker(worker) == {"batchItemFailures": []}
    return stack.get(created["id"], USER_FOR.get(kind, "alice"))


def calls(service: str, operation: str) -> list[dict]:
    """Record the params of each call the shared client makes (the exporters use it)."""
    seen: list[dict] = []
    client(service).meta.events.register(f"provide-client-params.{service}.{operation}",
                                         lambda params, **_: seen.append(dict(params)))
    return seen


def no_files_left() -> bool:
    s3 = boto3.client("s3")
    return (s3.list_objects_v2(Bucket=FILES).get("KeyCount") == 0
            and s3.list_multipart_uploads(Bucket=FILES).get("Uploads", []) == [])


# -- s3_bundle --------------------------------------------------------------------------------

OBJECTS = {
    "报表/Zoë.txt": "你好 Zoë, naïve café\n".encode() * 200,
    "exports/2024/a.csv": b"id,name\r\n1,Zo\xc3\xab\r\n",
    "exports/2024/深/b.bin": os.urandom(300_000),
    "exports/2024/empty.txt": b"",
    "exports/2024/../../evil.txt": b"zip-slip attempt",
    "exports/2024/sub/": b"",  # a console 'folder' placeholder, not a file
    "exports/2025/other.txt": b"not under the prefix",
}


@pytest.fixture
def sources(stack):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=SOURCES)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=SOURCES, Key=key, Body=body)
    return s3


def read_zip(data: bytes) -> tuple[zipfile.ZipFile, list[dict[str, str]]]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    manifest = list(csv.DictReader(io.StringIO(archive.read("MANIFEST.csv").decode("utf-8"))))
    return archive, manifest


def test_bundle_of_keys_and_prefix_with_utf8_names_and_manifest(stack, sources):
    task = build(stack, "s3_bundle", {"bucket": SOURCES, "keys": ["报表/Zoë.txt", "exports/2024/a.csv"],
                                      "prefix": "exports/2024/"}, file_name="bundle 报表")
    assert task["status"] == "succeeded", task["error"]
    assert task["file_name"] == "bundle 报表.zip" and task["content_type"] == "application/zip"
    _, obj, data = stored(task["id"])
    assert obj["ContentType"] == "application/zip"
    archive, manifest = read_zip(data)
    # explicit keys keep their key; prefix entries are relative to it; no duplicate, no
    # folder placeholder, no path outside the archive
    expected = {
        "报表/Zoë.txt": "报表/Zoë.txt",
        "exports/2024/a.csv": "exports/2024/a.csv",
        "_/_/evil.txt": "exports/2024/../../evil.txt",
        "empty.txt": "exports/2024/empty.txt",
        "深/b.bin": "exports/2024/深/b.bin",
    }
    names = archive.namelist()
    assert names[-1] == "MANIFEST.csv" and sorted(names[:-1]) == sorted(expected)
    assert names[:2] == ["报表/Zoë.txt", "exports/2024/a.csv"]
    for info in archive.infolist():
        assert info.flag_bits & 0x800  # UTF-8 names
        assert not info.filename.startswith("/") and ".." not in info.filename.split("/")
    for name, key in expected.items():
        assert archive.read(name) == OBJECTS[key]
    assert [r["name"] for r in manifest] == names[:-1]
    for row in manifest:
        body = OBJECTS[row["key"]]
        assert row["status"] == "ok" and row["name"] == next(n for n, k in expected.items()
                                                             if k == row["key"])
        assert int(row["size"]) == len(body) and row["sha256"] == hashlib.sha256(body).hexdigest()
    assert task["progress"]["rows"] == 5  # objects; no total: the prefix is listed as it goes
    assert "total" not in task["progress"]


def test_bundle_reads_objects_in_chunks_and_lists_page_by_page(stack, sources, monkeypatch):
    monkeypatch.setattr(s3_bundle, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(s3_bundle, "READ_CHUNK", 64 * 1024)
    big = os.urandom(12 * 1024 * 1024)  # incompressible: the zip spans three 5 MiB parts
    sources.put_object(Bucket=SOURCES, Key="exports/2024/big.bin", Body=big)
    listed = calls("s3", "ListObjectsV2")
    task = build(stack, "s3_bundle", {"bucket": SOURCES, "prefix": "exports/2024/"},
                 worker=fast_worker(part_size_bytes=5 * 1024 * 1024))
    assert task["status"] == "succeeded", task["error"]
    _, obj, data = stored(task["id"])
    assert obj["ETag"].strip('"').endswith("-3")
    assert len(listed) == 3 and listed[0]["MaxKeys"] == 2  # 6 keys (with the placeholder), 2 a page
    archive, manifest = read_zip(data)
    assert archive.read("big.bin") == big
    assert {r["name"]: r["sha256"] for r in manifest}["big.bin"] == hashlib.sha256(big).hexdigest()


def test_bundle_of_keys_has_a_known_total(stack, sources):
    task = build(stack, "s3_bundle", {"bucket": SOURCES, "keys": ["报表/Zoë.txt", "exports/2024/a.csv"]})
    assert task["progress"]["rows"] == task["progress"]["total"] == 2
    assert task["progress"]["percent"] == 100.0


def test_missing_key_fails_the_task_naming_the_key(stack, sources):
    task = build(stack, "s3_bundle", {"bucket": SOURCES, "keys": ["报表/Zoë.txt", "nope/缺失.txt"]})
    assert task["status"] == "failed" and task["error"]["code"] == "object_not_found"
    assert "nope/缺失.txt" in task["error"]["message"]
    assert no_files_left()
    assert [e["detail-type"] for e in stack.events()] == ["download.failed"]


def test_missing_key_is_listed_as_skipped_when_asked(stack, sources):
    task = build(stack, "s3_bundle", {"bucket": SOURCES, "keys": ["nope/缺失.txt", "报表/Zoë.txt"],
                                      "on_missing": "skip"})
    assert task["status"] == "succeeded"
    archive, manifest = read_zip(stored(task["id"])[2])
    assert archive.namelist() == ["报表/Zoë.txt", "MANIFEST.csv"]
    assert [(r["key"], r["status"], r["size"], r["sha256"]) for r in manifest] == [
        ("nope/缺失.txt", "skipped", "", ""),
        ("报表/Zoë.txt", "ok", str(len(OBJECTS["报表/Zoë.txt"])),
         hashlib.sha256(OBJECTS["报表/Zoë.txt"]).hexdigest())]


def test_a_bucket_removed_after_create_fails_the_task(stack, sources):
    """The create saw the bucket (it refuses a missing one); the build finds it gone."""
    bucket = "download-center-missing"  # on the allow-list
    sources.create_bucket(Bucket=bucket)
    sources.put_object(Bucket=bucket, Key="x/a.txt", Body=b"a")
    created = stack.create("alice", kind="s3_bundle", params={"bucket": bucket, "prefix": "x/"})
    sources.delete_object(Bucket=bucket, Key="x/a.txt")
    sources.delete_bucket(Bucket=bucket)
    assert stack.run_worker() == {"batchItemFailures": []}
    task = stack.get(created["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "bucket_not_found"
    assert bucket in task["error"]["message"]
    assert no_files_left()


@pytest.mark.parametrize("kind,params,user", [
    ("s3_bundle", {"bucket": "someone-elses-bucket", "prefix": "x/"}, "alice"),
    ("log_archive", {"log_group": "/aws/lambda/payroll", "start": "2024-05-01T00:00:00Z",
                     "end": "2024-05-02T00:00:00Z"}, "admin"),
])
def test_a_source_off_the_allow_list_is_refused_at_creation(stack, kind, params, user):
    resp = stack.client.http.post("/downloads", headers=stack.users[user].headers,
                                  body=json.dumps({"task_name": "t", "kind": kind, "params": params}))
    assert resp.status_code == 403 and resp.json_body["error"]["code"] == "forbidden"
    assert params[next(iter(params))] in resp.json_body["error"]["message"]
    assert stack.drain() == [] and no_files_left()


def refused(stack, kind: str, params: dict) -> dict:
    resp = stack.client.http.post("/downloads", headers=stack.users[USER_FOR.get(kind, "alice")].headers,
                                  body=json.dumps({"task_name": "t", "kind": kind, "params": params}))
    assert resp.status_code == 400, (params, resp.body)
    assert resp.json_body["error"]["code"] == "validation_error"
    return resp.json_body["error"]


def test_bundle_params_are_validated_at_creation(stack):
    for params in (
        {"bucket": SOURCES},  # neither keys nor prefix
        {"bucket": SOURCES, "keys": []},
        {"bucket": SOURCES, "keys": ["a", "a"]},
        {"bucket": SOURCES, "prefix": "a/", "on_missing": "ignore"},
        {"bucket": "Not_A_Bucket", "prefix": "a/"},
    ):
        refused(stack, "s3_bundle", params)


# -- log_archive ------------------------------------------------------------------------------

#: CloudWatch (and moto) refuse events older than 14 days: the events are from yesterday.
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


#: (stream, offset in seconds from T0, message); the range asked is [T0, T0 + 1 h)
EVENTS = [
    ("web-1", -1, "before the range"),
    ("web-1", 0, "GET /报表 200 Zoë"),
    ("web-1", 10, "ERROR naïve café: 連線逾時"),
    ("worker-ü", 20, "INFO Дмитриев logged in"),
    ("worker-ü", 30, "ERROR 😀 emoji payload"),
    ("web-1", 3599, "last second in range"),
    ("web-1", 3600, "at end: excluded"),
]


@pytest.fixture
def logs(stack):
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=GROUP)
    for stream in {s for s, _, _ in EVENTS}:
        cw.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        cw.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=[
            {"timestamp": ms(T0 + timedelta(seconds=off)), "message": msg}
            for s, off, msg in EVENTS if s == stream])
    return cw


def in_range(pattern: str = "") -> list[tuple[str, int, str]]:
    return sorted(((s, off, m) for s, off, m in EVENTS if 0 <= off < 3600 and pattern in m),
                  key=lambda e: e[1])


def log_params(**extra) -> dict:
    return {"log_group": GROUP, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))} | extra


def test_log_archive_text(stack, logs):
    task = build(stack, "log_archive", log_params(), fmt="text", file_name="日志")
    assert task["status"] == "succeeded", task["error"]
    assert task["file_name"] == "日志.log.gz" and task["content_type"] == "application/gzip"
    _, obj, data = stored(task["id"])
    assert obj["ContentType"] == "application/gzip"
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    expected = [f"{(T0 + timedelta(seconds=off)).strftime('%Y-%m-%dT%H:%M:%S')}.000Z {s} {m}"
                for s, off, m in in_range()]
    assert sorted(lines) == sorted(expected)
    assert task["progress"]["rows"] == len(expected) == 5


def test_log_archive_jsonl_with_filter_pattern_and_paging(stack, logs, monkeypatch):
    monkeypatch.setattr(log_archive, "PAGE_LIMIT", 1)
    pages = calls("logs", "FilterLogEvents")
    task = build(stack, "log_archive", log_params(filter_pattern="ERROR"), fmt="jsonl")
    assert task["status"] == "succeeded", task["error"]
    assert task["file_name"].endswith(".jsonl.gz")
    records = [json.loads(line) for line in gzip.decompress(stored(task["id"])[2]).decode().splitlines()]
    # CloudWatch interleaves streams by time; moto returns them one stream after the other
    records.sort(key=lambda r: r["timestamp"])
    assert [(r["stream"], r["message"]) for r in records] == [(s, m) for s, _, m in in_range("ERROR")]
    assert set(records[0]) == {"timestamp", "stream", "message", "ingestion_time"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", records[0]["ingestion_time"])
    assert records[0]["timestamp"] == f"{T0 + timedelta(seconds=10):%Y-%m-%dT%H:%M:%S}.000Z"
    assert len(pages) == 2 and "nextToken" in pages[1]  # one event a page
    assert pages[0]["endTime"] == ms(T0 + timedelta(hours=1)) - 1  # end is exclusive


def test_log_archive_of_chosen_streams(stack, logs):
    task = build(stack, "log_archive", log_params(log_streams=["worker-ü"]), fmt="jsonl")
    records = [json.loads(line) for line in gzip.decompress(stored(task["id"])[2]).decode().splitlines()]
    assert [r["message"] for r in records] == [m for s, _, m in in_range() if s == "worker-ü"]


def test_log_archive_of_an_empty_range_is_an_empty_gzip(stack, logs):
    params = log_params(start=iso(T0 + timedelta(days=3)), end=iso(T0 + timedelta(days=4)))
    task = build(stack, "log_archive", params, fmt="text")
    assert gzip.decompress(stored(task["id"])[2]) == b"" and task["progress"]["rows"] == 0


def test_a_log_group_deleted_after_create_fails_the_task(stack, logs):
    """The create saw the group (it refuses a missing one); the build finds it gone."""
    group = "/download-center/missing"  # on the allow-list
    logs.create_log_group(logGroupName=group)
    created = stack.create("admin", kind="log_archive", params=log_params(log_group=group))
    logs.delete_log_group(logGroupName=group)
    assert stack.run_worker() == {"batchItemFailures": []}
    task = stack.get(created["id"], "admin")
    assert task["status"] == "failed" and task["error"]["code"] == "log_group_not_found"
    assert group in task["error"]["message"]
    assert no_files_left()


def test_bad_time_ranges_are_refused_at_creation(stack):
    for start, end, field in (
        ("2024-05-02T00:00:00Z", "2024-05-01T00:00:00Z", "params.end"),
        ("2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z", "params.end"),
        ("2024-05-01T00:00:00Z", "2024-06-02T00:00:00Z", "params.end"),  # 32 days
        ("2024-05-01T00:00:00+02:00", "2024-05-02T00:00:00Z", "params.start"),
        ("2024-05-01", "2024-05-02T00:00:00Z", "params.start"),
    ):
        error = refused(stack, "log_archive", log_params(start=start, end=end))
        assert error["details"][0]["field"] == field, (start, end, error)


# -- the documented way to add a kind ---------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "custom-kinds.md"


@pytest.fixture
def documented_kinds():
    """Run the module the docs show, exactly as written there, then forget its kinds."""
    from chalicelib import validation

    blocks = re.findall(r"```python\n(# chalicelib/custom_kinds\.py.*?)```", DOC.read_text("utf-8"),
                        flags=re.S)
    assert len(blocks) == 2, "docs/custom-kinds.md lost one of its two examples"
    module = types.ModuleType("custom_kinds_from_docs")
    exec(compile("\n".join(blocks), str(DOC), "exec"), module.__dict__)  # noqa: S102
    yield module
    for kind in ("price_list", "notice"):
        REGISTRY.pop(kind, None)
    validation._compiled.cache_clear()


def test_documented_kinds_are_listed_and_build(stack, documented_kinds):
    listed = stack.client.http.get("/kinds", headers=stack.users["admin"].headers).json_body["items"]
    by_kind = {k["kind"]: k for k in listed}
    assert {"demo", "dynamodb_table", "s3_bundle", "log_archive", "price_list", "notice"} <= set(by_kind)
    assert by_kind["price_list"]["formats"][0] == "csv"
    assert by_kind["price_list"]["params_schema"]["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert by_kind["notice"]["formats"] == ["txt"] and by_kind["notice"]["params_schema"]["required"] == [
        "text"]

    prices = build(stack, "price_list", {"currency": "EUR"}, fmt="csv")
    assert prices["status"] == "succeeded", prices["error"]
    rows = list(csv.DictReader(io.StringIO(stored(prices["id"])[2].decode("utf-8"))))
    assert [r["name"] for r in rows] == ["Café crème", "Crème brûlée"]
    assert prices["progress"] == {"rows": 2, "bytes": prices["size"], "total": 2, "percent": 100.0}

    notice = build(stack, "notice", {"text": "Zoë 报表", "copies": 3}, file_name="readme")
    assert notice["file_name"] == "readme.txt" and notice["content_type"] == "text/plain; charset=utf-8"
    assert stored(notice["id"])[2] == "Zoë 报表\n".encode() * 3

    nothing = build(stack, "price_list", {"currency": "CHF"})
    assert nothing["status"] == "failed" and nothing["error"]["code"] == "nothing_to_export"
    bad = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps(
        {"task_name": "t", "kind": "price_list", "params": {"currency": "euro"}}))
    assert bad.status_code == 400
    assert bad.json_body["error"]["details"] == [
        {"field": "params.currency", "issue": "must be three capital letters, e.g. EUR"}]
