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
from chalicelib.task import Status

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


def same_file(many: dict[str, Any], key: str, one_key: str) -> bytes:
    """A segmented single file: the bytes one worker builds, each range's checksums right."""
    data = body_of(key)
    assert data == body_of(one_key)
    assert many["md5"] is None and many["sha256"] is None  # no whole-file pass: ranges instead
    ranges = many["ranges"]
    assert [r["start"] for r in ranges] == [sum(r["size"] for r in ranges[:i]) for i in range(len(ranges))]
    assert sum(r["size"] for r in ranges) == len(data) == many["size"]
    for r in ranges:
        piece = data[r["start"]:r["start"] + r["size"]]
        assert hashlib.sha256(piece).hexdigest() == r["sha256"]
        assert hashlib.md5(piece).hexdigest() == r["md5"]
    return data


def built(stack, **body: Any) -> tuple[dict[str, Any], Any]:
    created = stack.create(**body)
    drive(stack)
    return stack.get(created["id"]), TaskRepository().get(created["id"])


@pytest.mark.parametrize("fmt, extra", [("csv", {}), ("jsonl", {}),
                                        ("csv", {"bom": True, "delimiter": ";"})])
def test_a_single_object_from_segments_has_the_bytes_of_one_worker(stack, fmt, extra):
    params = {"rows": 20_000, "seed": 7, **extra}
    one, t1 = built(stack, format=fmt, params=params, parallelism=1)
    many, task = built(stack, format=fmt, params=params, parallelism=4)
    assert many["status"] == "succeeded" and len(task.segments) == 4
    assert one["ranges"] is None and one["sha256"]  # one worker: the whole file's checksums
    same_file(many, task.object_key, t1.object_key)
    assert [r["rows"] for r in many["ranges"]] == [5000] * 4
    assert many["progress"]["rows"] == 20_000 and many["progress"]["percent"] == 100.0
    assert many["progress"]["segments"] == {"total": 4, "succeeded": 4, "running": 0, "failed": 0}
    assert many["files"] is None and many["output"] == "single" and many["parallelism"] == 4
    # the segments wrote into the file's own upload: nothing else was ever stored
    assert keys_of(task.id) == [task.object_key]
    assert not open_uploads()


def test_gzip_segments_are_members_of_one_gzip_file(stack):
    params = {"rows": 9_000, "seed": 3, "compression": "gzip"}
    one, t1 = built(stack, params=params)
    many, t4 = built(stack, params=params, parallelism=3)
    whole, parts = body_of(t1.object_key), body_of(t4.object_key)
    assert gzip.decompress(parts) == gzip.decompress(whole)
    for r in many["ranges"]:  # each range a gzip member of its own
        assert gzip.decompress(parts[r["start"]:r["start"] + r["size"]])
    assert hashlib.sha256(parts).hexdigest() == hashlib.sha256(
        b"".join(parts[r["start"]:r["start"] + r["size"]] for r in many["ranges"])).hexdigest()


def test_segments_past_the_part_minimum_are_the_files_parts_as_built(stack, caplog):
    # about 6.6 MiB a segment: each uploads one part into the file's upload, its tail held back
    params = {"rows": 120_000, "seed": 5}
    one, t1 = built(stack, format="jsonl", params=params, parallelism=1)
    many, task = built(stack, format="jsonl", params=params, parallelism=2)
    assert min(s.size for s in task.segments) > 5 * 1024 * 1024
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key=task.object_key)
    assert head["ETag"].strip('"').endswith("-2")  # one part per segment
    assert [s.parts for s in task.segments] == [[1, 1], [5001, 5001]]  # each its own range
    same_file(many, task.object_key, t1.object_key)
    assert "again for the finish" not in caplog.text  # nothing built twice, nothing copied


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


# -- cancel, crashes, races, failures ------------------------------------------------------------
def segment_records(stack, task_id: str) -> dict[int, dict[str, Any]]:
    out = {}
    for record in stack.drain():
        body = json.loads(record["body"])
        assert body["type"] == "download.segment" and body["task_id"] == task_id
        out[body["segment"]] = record
    return out


def coordinate(stack, **body: Any) -> tuple[str, dict[int, dict[str, Any]]]:
    """Create and plan a task; its segments' messages, by number."""
    task_id = stack.create(**body)["id"]
    assert fast_worker().handle_batch(stack.drain()) == {"batchItemFailures": []}
    return task_id, segment_records(stack, task_id)


def age_segment(task_id: str, number: int, seconds: float) -> None:
    """As if segment ``number``'s worker (and the task's last beat) stopped ``seconds`` ago."""
    from datetime import timedelta

    from chalicelib.adapters.tasks_repo import TaskModel
    from chalicelib.clock import now

    old = now() - timedelta(seconds=seconds)
    due = old + timedelta(seconds=SETTINGS.stale_after_seconds)
    TaskModel(task_id).update(actions=[TaskModel.segs[f"{number:05d}"]["hb"].set(int(old.timestamp())),
                                       TaskModel.heartbeat_at.set(old),
                                       TaskModel.due_at.set(int(due.timestamp()))])


def test_cancel_mid_way_stops_every_segment_and_leaves_nothing(stack):
    import threading
    import time

    task_id, records = coordinate(stack, format="jsonl", params={"rows": 900_000}, parallelism=2)
    worker = fast_worker(part_size_bytes=5 * 1024 * 1024)
    assert worker.settings.progress_interval_seconds == 2  # the deployment's own interval
    threads = [threading.Thread(target=worker.handle_batch, args=([r],)) for r in records.values()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while stack.get(task_id)["progress"].get("bytes", 0) < 12 * 1024 * 1024:
        assert time.monotonic() < deadline, "the segments never got going"
        time.sleep(0.05)
    running = stack.get(task_id)["progress"]["segments"]
    assert running["running"] == 2 and running["total"] == 2
    resp = stack.client.http.post(f"/downloads/{task_id}/cancel", headers=stack.users["alice"].headers)
    assert resp.status_code == 202 and resp.json_body["status"] == "canceling"
    asked = time.monotonic()
    for thread in threads:
        thread.join(timeout=30)
    assert time.monotonic() - asked < 5  # every segment heard it at its next beat
    task = stack.get(task_id)
    assert task["status"] == "canceled" and task["url"] is None and task["files"] is None
    assert keys_of(task_id) == [] and open_uploads() == []
    assert [e["detail-type"] for e in stack.events()] == ["download.canceled"]


def test_a_segment_whose_worker_crashed_is_rebuilt_alone(stack):
    params = {"rows": 3000, "seed": 4}
    one, _ = built(stack, params=params, parallelism=1)
    task_id, records = coordinate(stack, params=params, parallelism=3)
    task = TaskRepository().get(task_id)
    assert TaskRepository().claim_segment(task, 2, task.heartbeat_at) is not None  # then it died
    worker = fast_worker()
    worker.handle_batch([records[1], records[3]])
    assert TaskRepository().get(task_id).status is Status.RUNNING
    worker.handle_batch([records[2]])  # SQS delivers it again: its worker still counts as alive
    assert TaskRepository().get(task_id).segments[1].lease == 1
    age_segment(task_id, 2, SETTINGS.stale_after_seconds + 5)
    worker.handle_batch([records[2]])  # now it is taken over and built
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED
    same_file(stack.get(task_id), task.object_key, TaskRepository().get(one["id"]).object_key)
    assert [s.lease for s in task.segments] == [1, 2, 1]  # segments 1 and 3 were built once
    assert keys_of(task_id) == [task.object_key] and open_uploads() == []


def test_a_segment_whose_worker_died_is_sent_again_and_the_task_is_no_dead_build(stack):
    """The sweeper sees the task stale: one segment's worker died, the others are stored. That is
    a segment to build again, not a build to count toward worker_lost: no requeue, no new plan."""
    from chalicelib.clock import now
    from chalicelib.sweeper import Sweeper

    params = {"rows": 3000, "seed": 8}
    one, _ = built(stack, params=params, parallelism=1)
    task_id, records = coordinate(stack, params=params, parallelism=3)
    task = TaskRepository().get(task_id)
    fast_worker().handle_batch([records[1], records[3]])
    assert TaskRepository().claim_segment(task, 2, task.heartbeat_at) is not None  # then it died
    age_segment(task_id, 2, SETTINGS.stale_after_seconds + 5)
    swept = Sweeper(SETTINGS).sweep(now())
    assert swept["segments_resent"] == 1 and "requeued" not in swept
    waiting = TaskRepository().get(task_id)
    assert waiting.status is Status.RUNNING and waiting.lease == 1 and waiting.claims == 1
    again = segment_records(stack, task_id)
    assert list(again) == [2]  # only the dead segment's message
    fast_worker().handle_batch(list(again.values()))
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED and task.lease == 1 and task.claims == 1
    assert [s.lease for s in task.segments] == [1, 2, 1]
    same_file(stack.get(task_id), task.object_key, TaskRepository().get(one["id"]).object_key)


def test_the_finalizer_runs_once_when_two_segments_finish_at_the_same_moment(stack, monkeypatch):
    import threading

    from chalicelib.adapters import storage

    task_id, records = coordinate(stack, params={"rows": 4000}, parallelism=2)
    barrier = threading.Barrier(2, timeout=20)
    original = TaskRepository.finish_segment
    composed: list[str] = []
    complete = storage.complete_upload

    def together(self, *args, **kwargs):  # both segments stored: record them at once
        barrier.wait()
        return original(self, *args, **kwargs)

    def counted(bucket, key, *args, **kwargs):
        composed.append(key)
        return complete(bucket, key, *args, **kwargs)

    monkeypatch.setattr(TaskRepository, "finish_segment", together)
    monkeypatch.setattr(storage, "complete_upload", counted)
    worker = fast_worker()
    threads = [threading.Thread(target=worker.handle_batch, args=([r],)) for r in records.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED and task.segments_done == 2
    assert len(composed) == 1
    assert [e["detail-type"] for e in stack.events()] == ["download.succeeded"]


class Flaky:
    """A demo-like kind whose segment 2 fails while ``broken`` says so."""

    broken = True


def flaky_exporter():
    from chalicelib.errors import ExportError
    from chalicelib.exporters.demo import DemoExporter

    class FlakyDemo(DemoExporter):
        kind = "flaky_demo"

        def open_segment(self, params, ctx, shared, segment):
            if segment.number == 2 and Flaky.broken:
                raise ExportError("source_unavailable", "The source did not answer.")
            return super().open_segment(params, ctx, shared, segment)

    return FlakyDemo()


def drive_until(stack, done, worker=None, seconds: float = 30) -> None:
    """Hand messages to the worker until ``done()``; delayed messages are waited for."""
    import time

    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "never done"
        records = stack.drain()
        if records:
            (worker or fast_worker()).handle_batch(records)
        else:
            time.sleep(0.2)


def test_a_failing_segment_is_retried_alone_then_fails_the_task_and_a_retry_rebuilds_only_it(stack):
    from chalicelib.exporters import REGISTRY, register
    from chalicelib.segments import MAX_SEGMENT_TRIES

    register(flaky_exporter())
    try:
        Flaky.broken = True
        task_id = stack.create(kind="flaky_demo", params={"rows": 3000, "seed": 2}, parallelism=3,
                               output="parts")["id"]
        drive_until(stack, lambda: TaskRepository().get(task_id).status is Status.FAILED)
        task = TaskRepository().get(task_id)
        assert task.error.code == "source_unavailable"
        assert task.error.message.startswith("Segment 2 of 3: ")
        assert task.segments[1].tries == MAX_SEGMENT_TRIES
        assert [s.lease for s in task.segments] == [1, MAX_SEGMENT_TRIES, 1]
        failed = stack.get(task_id)
        assert failed["progress"]["segments"] == {"total": 3, "succeeded": 2, "running": 0, "failed": 1}
        kept = [s.key for s in task.segments if s.key]
        assert len(kept) == 2 and set(kept) <= set(keys_of(task_id))
        Flaky.broken = False
        resp = stack.client.http.post(f"/downloads/{task_id}/retry", headers=stack.users["alice"].headers)
        assert resp.status_code == 202
        drive_until(stack, lambda: TaskRepository().get(task_id).status is Status.SUCCEEDED)
        task = TaskRepository().get(task_id)
        assert [s.key for s in task.segments if s.number != 2] == kept  # built once, kept
        one, _ = built(stack, params={"rows": 3000, "seed": 2}, parallelism=3, output="parts")
        assert [f["sha256"] for f in stack.get(task_id)["files"]] == [f["sha256"] for f in one["files"]]
    finally:
        REGISTRY.pop("flaky_demo", None)


# -- the create body ----------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"parallelism": 0}, "parallelism"), ({"parallelism": 33}, "parallelism"),
    ({"parallelism": "many"}, "parallelism"), ({"parallelism": True}, "parallelism"),
    ({"parallelism": 2.5}, "parallelism"), ({"output": "zip"}, "output"),
    ({"format": "xlsx", "parallelism": 4}, "parallelism"),
])
def test_parallelism_and_output_are_checked_at_create(stack, body, field):
    payload = {"task_name": "t", "kind": "demo", "params": {"rows": 10}} | body
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers,
                                  body=json.dumps(payload))
    assert resp.status_code == 400, resp.body
    error = resp.json_body["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]


def test_an_xlsx_export_splits_into_parts_one_workbook_each(stack):
    import openpyxl

    res, task = built(stack, format="xlsx", params={"rows": 2500}, parallelism=3, output="parts")
    assert res["status"] == "succeeded" and len(res["files"]) == 3
    total = 0
    for f in task.files:
        book = openpyxl.load_workbook(io.BytesIO(body_of(f["key"])), read_only=True)
        rows = list(book.active.iter_rows(values_only=True))
        assert rows[0] == ("id", "name", "email", "city", "amount", "signup_date")  # its header
        total += len(rows) - 1
    assert total == 2500


def test_kinds_say_how_they_split(stack):
    resp = stack.client.http.get("/kinds", headers=stack.users["alice"].headers)
    demo = next(k for k in resp.json_body["items"] if k["kind"] == "demo")
    assert demo["split"] == {"by": "row ranges", "max_segments": 32,
                             "outputs": {"csv": ["single", "parts"], "jsonl": ["single", "parts"],
                                         "xlsx": ["parts"]}}


def test_auto_splits_only_what_a_quarter_budget_cannot_hold(stack):
    import time

    small = stack.create(params={"rows": 1000})
    fast_worker().handle_batch(stack.drain())
    assert not TaskRepository().get(small["id"]).segments  # one worker, as always
    big = stack.create(params={"rows": 600_000})
    start = time.monotonic()
    # a 40 s invocation, 30 s of margin: 10 s of work each, a quarter of it per segment
    fast_worker().handle_batch(stack.drain(), lambda: int((40 - (time.monotonic() - start)) * 1000))
    task = TaskRepository().get(big["id"])
    assert len(task.segments) == 32 or len(task.segments) == -(-600_000 // (150_000 * 10 // 4))


def test_a_last_segment_short_of_time_hands_the_finalizing_to_a_fresh_invocation(stack):
    import time

    params = {"rows": 4000, "seed": 6}
    one, _ = built(stack, params=params, parallelism=1)
    task_id, records = coordinate(stack, params=params, parallelism=2)
    started = TaskRepository().get(task_id).started_at
    fast_worker().handle_batch([records[1]])
    begin = time.monotonic()
    # 31 s left, 30 of them margin: too little to compose and hash here
    fast_worker().handle_batch([records[2]], lambda: int((31 - (time.monotonic() - begin)) * 1000))
    handed = TaskRepository().get(task_id)
    assert handed.status is Status.QUEUED and handed.segments_done == 2
    assert stack.get(task_id)["progress"]["rows"] == 4000  # the segments' rows still show
    messages = stack.drain()
    assert [json.loads(m["body"])["type"] for m in messages] == ["download.build"]
    fast_worker().handle_batch(messages + messages)  # twice: one claim finalizes
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED
    same_file(stack.get(task_id), task.object_key, TaskRepository().get(one["id"]).object_key)
    assert task.started_at == started and task.lease == 2
    assert task.claims == 1  # the hand-off's claim is no death of a build
    ours = [e["detail-type"] for e in stack.events() if e["detail"]["id"] == task_id]
    assert ours == ["download.succeeded"]


def test_a_queued_request_may_ask_for_segments_and_parts(stack):
    alice = stack.users["alice"]
    request = {"task_name": "CRM", "kind": "demo", "format": "csv", "params": {"rows": 500},
               "owner": alice.sub, "owner_name": "alice", "tenant": "acme", "idempotency_key": "k1",
               "parallelism": 2, "output": "parts"}
    boto3.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(
        {"type": "download.request", "version": 1, "request": request}))
    drive(stack)
    listed = stack.client.http.get("/downloads", headers=alice.headers).json_body["items"]
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert listed[0]["parallelism"] == 2 and len(listed[0]["files"]) == 2
    assert all(f["url"] for f in listed[0]["files"]) and listed[0]["manifest"]["url"]


def test_a_cancel_while_the_finalizing_waits_in_the_queue_leaves_nothing(stack):
    import time

    task_id, records = coordinate(stack, params={"rows": 2000}, parallelism=2)
    fast_worker().handle_batch([records[1]])
    begin = time.monotonic()
    fast_worker().handle_batch([records[2]], lambda: int((31 - (time.monotonic() - begin)) * 1000))
    assert TaskRepository().get(task_id).status is Status.QUEUED  # handed off, segments stored
    # under S3's part minimum, the two segments' bytes wait as small objects for the finish to join
    assert len(keys_of(task_id)) == 2 and all(".short-" in k for k in keys_of(task_id))
    assert len(open_uploads()) == 1
    resp = stack.client.http.post(f"/downloads/{task_id}/cancel", headers=stack.users["alice"].headers)
    assert resp.status_code == 202 and resp.json_body["status"] == "canceled"
    assert keys_of(task_id) == [] and open_uploads() == []
    drive(stack)  # the finalizing build's message finds it canceled
    assert TaskRepository().get(task_id).status is Status.CANCELED and keys_of(task_id) == []


def test_a_segment_object_lost_before_the_finalizing_is_rebuilt_and_the_task_completes(stack):
    params = {"rows": 3000, "seed": 9}
    one, _ = built(stack, params=params, parallelism=2, output="parts")
    task_id, records = coordinate(stack, params=params, parallelism=2, output="parts")
    fast_worker().handle_batch([records[1]])
    lost = TaskRepository().get(task_id).segments[0].key
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=lost)  # an operator's slip
    fast_worker().handle_batch([records[2]])  # the finish finds it gone: a new plan, no manifest
    task = TaskRepository().get(task_id)
    assert task.status is Status.QUEUED and task.manifest is None and open_uploads() == []
    drive(stack)  # the next plan finds segment 1's object gone and builds it again
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED
    assert [f["sha256"] for f in stack.get(task_id)["files"]] == [f["sha256"] for f in one["files"]]
    assert [s.lease for s in task.segments] == [2, 1]
    assert keys_of(task_id) == sorted([task.object_key] + [s.key for s in task.segments])


# -- a tenant's bound on segments building at once ----------------------------------------------
def test_a_tenants_segments_past_its_bound_wait_on_the_queue_and_build_later(stack, monkeypatch):
    """One tenant cannot hold every worker: with its slots taken a segment is not claimed and not
    failed; its message comes back with a delay, and builds once a slot is free."""
    from datetime import timedelta

    from chalicelib import segmented
    from chalicelib.adapters import queue
    from chalicelib.clock import now

    params = {"rows": 3000, "seed": 11}
    one, _ = built(stack, params=params, parallelism=1)
    task_id, records = coordinate(stack, params=params, parallelism=2)
    repo, worker = TaskRepository(), fast_worker(max_building_segments_per_tenant=1)
    # another build of acme's holds its one slot
    assert repo.take_building_slot("acme", "elsewhere", now(), now() + timedelta(minutes=15), 1)
    delays: list[int] = []
    real_send = queue.send

    def send(url: str, body: dict[str, Any], attributes: Any = None, delay_seconds: int = 0) -> str:
        delays.append(delay_seconds)
        return real_send(url, body, attributes)  # at once: the test does not wait

    monkeypatch.setattr(queue, "send", send)
    assert worker.handle_batch(list(records.values())) == {"batchItemFailures": []}
    waiting = repo.get(task_id)
    assert waiting.status is Status.RUNNING and waiting.segments_done == 0
    assert [(s.status.value, s.claims, s.lease) for s in waiting.segments] == [("queued", 0, 0)] * 2
    wait = segmented.SLOT_WAIT_SECONDS
    assert len(delays) == 2 and all(wait <= d <= 2 * wait <= 900 for d in delays)
    again = segment_records(stack, task_id)
    assert sorted(again) == [1, 2]
    # carol's tenant has slots of its own: its segments build while acme's wait
    other = stack.create("carol", params={"rows": 100}, parallelism=2)["id"]
    drive(stack, worker)
    assert repo.get(other).status is Status.SUCCEEDED
    repo.release_building_slot("acme", "elsewhere")
    delays.clear()
    worker.handle_batch(list(again.values()))  # one at a time: each takes the slot and gives it back
    task = repo.get(task_id)
    assert task.status is Status.SUCCEEDED and delays == []
    assert [s.claims for s in task.segments] == [1, 1]
    same_file(stack.get(task_id), task.object_key, repo.get(one["id"]).object_key)
    # every slot is given back: the tenant may take its one again
    assert repo.take_building_slot("acme", "probe", now(), now() + timedelta(minutes=1), 1)
