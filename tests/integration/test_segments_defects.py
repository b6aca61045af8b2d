"""Segmented builds as a busy deployment runs them (issue 18): each test failed on the code before.

A queue full of other users' builds, a retry days later, an export with no
rows, a final write that fails, a cancel while the coordinator plans, and a
superseded segment whose late part lands in the file's upload.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest

from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository
from chalicelib.clock import now
from chalicelib.exporters import REGISTRY, register
from chalicelib.exporters.demo import DemoExporter
from chalicelib.segments import first_part
from chalicelib.sweeper import Sweeper
from chalicelib.task import REQUEST_CANCEL, SUCCEED, Status

from .conftest import SETTINGS, fast_worker
from .test_segments import (
    BUCKET,
    age_segment,
    body_of,
    built,
    coordinate,
    drive,
    keys_of,
    open_uploads,
    same_file,
    segment_records,
)

MiB = 1024 * 1024


def age_task(task_id: str, seconds: float) -> None:
    """As if nothing had beaten the task for ``seconds`` (its segments wait in a busy queue)."""
    old = now() - timedelta(seconds=seconds)
    due = old + timedelta(seconds=SETTINGS.stale_after_seconds)
    TaskModel(task_id).update(actions=[TaskModel.heartbeat_at.set(old),
                                       TaskModel.due_at.set(int(due.timestamp()))])


def test_segments_waiting_behind_other_builds_are_not_a_dead_build(stack):
    """Before: every sweep took the waiting task for a dead build, planned it again (its messages
    waited too), and the third made it ``failed worker_lost`` although no worker had died."""
    params = {"rows": 3000, "seed": 11}
    one, t1 = built(stack, params=params, parallelism=1)
    task_id, first = coordinate(stack, params=params, parallelism=3)
    sweeper = Sweeper(SETTINGS)
    for sweep in range(5):  # five staleness windows with no worker free for it
        age_task(task_id, SETTINGS.stale_after_seconds * (sweep + 2))
        done = sweeper.sweep(now())
        assert done["segments_resent"] == 1 and not {"requeued", "failed_worker_lost"} & set(done)
        waiting = TaskRepository().get(task_id)
        assert waiting.status is Status.RUNNING and waiting.lease == 1 and waiting.claims == 1
        assert sorted(segment_records(stack, task_id)) == [1, 2, 3]  # sent again, in case lost
    worker = fast_worker()
    worker.handle_batch(list(first.values()) + list(first.values()))  # the first ones, twice
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED and [s.lease for s in task.segments] == [1, 1, 1]
    same_file(stack.get(task_id), task.object_key, t1.object_key)


def test_a_segment_that_keeps_dying_fails_the_task_but_the_others_do_not_count(stack):
    task_id, records = coordinate(stack, params={"rows": 3000}, parallelism=3)
    fast_worker().handle_batch([records[1], records[3]])
    repo = TaskRepository()
    for _ in range(SETTINGS.max_build_claims):  # segment 2's worker dies, again and again
        task = repo.get(task_id)
        assert repo.claim_segment(task, 2, now()) is not None
        age_segment(task_id, 2, SETTINGS.stale_after_seconds + 5)
        assert Sweeper(SETTINGS).sweep(now())["segments_resent"] == 1
        assert repo.get(task_id).status is Status.RUNNING
    fast_worker().handle_batch(list(segment_records(stack, task_id).values()))
    task = repo.get(task_id)
    assert task.status is Status.FAILED and task.error.code == "worker_lost"
    assert task.error.message.startswith("Segment 2 of 3:") and open_uploads() == []


def test_a_retried_parts_task_expires_no_later_than_its_oldest_file(stack):
    """Before: a retry kept the files that succeeded and gave the task a new week, while S3's
    lifecycle rule counts from each object's creation: URLs answering 404 for days."""
    from tests.integration.test_segments import Flaky, flaky_exporter

    register(flaky_exporter())
    try:
        Flaky.broken = True
        created = stack.create(kind="flaky_demo", params={"rows": 3000, "seed": 2}, parallelism=3,
                               output="parts")
        task_id = created["id"]
        from tests.integration.test_segments import drive_until

        drive_until(stack, lambda: TaskRepository().get(task_id).status is Status.FAILED)
        ttl = timedelta(days=SETTINGS.file_ttl_days)
        two_days, six_days = now() - timedelta(days=2), now() - timedelta(days=6)
        TaskModel(task_id).update(actions=[  # segment 1 stored 2 days ago, segment 3 six days ago
            TaskModel.segs["00001"]["at"].set(int(two_days.timestamp())),
            TaskModel.segs["00003"]["at"].set(int(six_days.timestamp()))])
        Flaky.broken = False
        resp = stack.client.http.post(f"/downloads/{task_id}/retry", headers=stack.users["alice"].headers)
        assert resp.status_code == 202
        drive_until(stack, lambda: TaskRepository().get(task_id).status is Status.SUCCEEDED)
        task = TaskRepository().get(task_id)
        # segment 3 had less than half a lifetime left: built again; segment 1 kept
        assert [s.lease for s in task.segments] == [1, 4, 2]
        assert abs((task.expires_at - (two_days + ttl)).total_seconds()) < 2
        for f in task.files:
            assert storage.head_size(BUCKET, f["key"]) == f["size"]
    finally:
        REGISTRY.pop("flaky_demo", None)


class _Empty(DemoExporter):
    """A kind whose source has no rows at all (a filter that matches nothing)."""

    kind = "empty_demo"

    def open(self, params, ctx):  # type: ignore[no-untyped-def]
        columns, _ = super().open(params, ctx)
        return columns, iter(())

    def open_segment(self, params, ctx, shared, segment):  # type: ignore[no-untyped-def]
        columns, _ = super().open_segment(params, ctx, shared, segment)
        return columns, iter(())


def test_a_segmented_single_export_with_no_rows_succeeds_as_one_worker_does(stack):
    """Before: every segment was 0 bytes, CompleteMultipartUpload got no part (MalformedXML)
    and the task stayed running until the sweeper failed it."""
    register(_Empty())
    try:
        one, t1 = built(stack, kind="empty_demo", format="jsonl", params={"rows": 10}, parallelism=1)
        many, task = built(stack, kind="empty_demo", format="jsonl", params={"rows": 10},
                           parallelism=3)
        assert one["status"] == many["status"] == "succeeded" and many["size"] == one["size"] == 0
        assert body_of(task.object_key) == b"" and len(task.segments) == 3
        assert [r["size"] for r in many["ranges"]] == [0, 0, 0] and open_uploads() == []
    finally:
        REGISTRY.pop("empty_demo", None)


@pytest.mark.parametrize("body", [{"parallelism": 1}, {"parallelism": 2},
                                  {"parallelism": 2, "output": "parts"}])
def test_a_failed_final_write_leaves_no_file(stack, monkeypatch, body):
    """Before: the upload was complete, the write that records it raised, the task failed with no
    ``object_key``, and the file stayed in the bucket."""
    original = TaskRepository.apply

    def failing(self, t, task, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if t is SUCCEED:
            raise RuntimeError("DynamoDB is unavailable")
        return original(self, t, task, *args, **kwargs)

    monkeypatch.setattr(TaskRepository, "apply", failing)
    created = stack.create(params={"rows": 2000}, **body)
    for _ in range(3):  # SQS delivers a failed message again
        records = stack.drain()
        if records:
            fast_worker().handle_batch(records)
    task = TaskRepository().get(created["id"])
    if body["parallelism"] == 1:
        assert task.status is Status.FAILED and task.error.code == "internal_error"
    single = body.get("output") != "parts"
    left = keys_of(created["id"])
    assert task.object_key is None
    if single:  # the stored file went with the failed write; short segments wait for a retry
        assert all(".short-" in k for k in left)
    else:  # the parts' files stay for a retry; the manifest, which nothing recorded, is gone
        assert left and all(".seg-" in k for k in left)


def test_a_cancel_while_the_coordinator_plans_is_acknowledged(stack):
    """Before: the plan's write was refused (the task was canceling) and nobody acknowledged the
    cancel: the task held its quota slot until the stale sweep."""

    class Slow(DemoExporter):
        kind = "slow_plan_demo"

        def plan(self, params, fmt, settings, count):  # type: ignore[no-untyped-def]
            task = TaskRepository().get(Slow.task_id)
            assert TaskRepository(SETTINGS.lifetimes()).apply(REQUEST_CANCEL, task, now()) is not None
            return super().plan(params, fmt, settings, count)

    register(Slow())
    try:
        Slow.task_id = stack.create(kind="slow_plan_demo", params={"rows": 2000}, parallelism=2)["id"]
        fast_worker().handle_batch(stack.drain())
        task = TaskRepository().get(Slow.task_id)
        assert task.status is Status.CANCELED and not task.segments
        assert open_uploads() == [] and keys_of(Slow.task_id) == []
        assert TaskRepository().active_count(task.owner) == 0  # its slot is back
        assert not stack.drain()  # no segment was sent
    finally:
        REGISTRY.pop("slow_plan_demo", None)


def _late_part(task_id: str, number: int) -> None:
    """A superseded build of segment 2 sends one more part, as its sender thread finishes."""
    task = TaskRepository().get(task_id)
    boto3.client("s3").upload_part(Bucket=BUCKET, Key=task.plan_upload["key"],
                                   UploadId=task.plan_upload["id"], PartNumber=number,
                                   Body=b"X" * (6 * MiB))


@pytest.mark.parametrize("when", ["before_listing", "after_listing"])
def test_a_superseded_segments_late_part_never_lands_in_the_file(stack, monkeypatch, when):
    params = {"rows": 120_000, "seed": 5}  # about 6.6 MiB a segment: parts as built, no rebuild
    one, t1 = built(stack, format="jsonl", params=params, parallelism=1)
    task_id, records = coordinate(stack, format="jsonl", params=params, parallelism=2)
    fast_worker().handle_batch([records[1]])
    assert keys_of(task_id) == []  # a stored segment is a part of the upload, never an object
    stored = TaskRepository().get(task_id)
    assert stored.segments[0].parts == [1, 1]
    late_number = first_part(2, 2)  # segment 2's first part number
    listed, completed = storage.list_parts, storage.complete_upload
    raced = []

    def list_then(bucket, key, upload_id):  # type: ignore[no-untyped-def]
        if when == "before_listing" and not raced:
            raced.append(True)
            _late_part(task_id, late_number)
        return listed(bucket, key, upload_id)

    def complete_then(bucket, key, upload_id, parts):  # type: ignore[no-untyped-def]
        if when == "after_listing" and not raced:
            raced.append(True)
            _late_part(task_id, late_number)
        return completed(bucket, key, upload_id, parts)

    monkeypatch.setattr(storage, "list_parts", list_then)
    monkeypatch.setattr(storage, "complete_upload", complete_then)
    fast_worker().handle_batch([records[2]])  # the successor stores segment 2 and finishes
    task = TaskRepository().get(task_id)
    assert raced and task.status is Status.SUCCEEDED
    data = same_file(stack.get(task_id), task.object_key, t1.object_key)
    assert b"XXXXXXXX" not in data
    assert keys_of(task_id) == [task.object_key] and open_uploads() == []


def test_a_flipped_byte_is_caught_by_its_ranges_checksum(stack):
    params = {"rows": 6000, "seed": 3}
    many, task = built(stack, params=params, parallelism=3)
    data = bytearray(body_of(task.object_key))
    ranges = many["ranges"]
    data[ranges[1]["start"] + 10] ^= 0x01  # one bit of segment 2's range
    import hashlib

    bad = [r["segment"] for r in ranges
           if hashlib.sha256(data[r["start"]:r["start"] + r["size"]]).hexdigest() != r["sha256"]]
    assert bad == [2]


def test_the_busy_queue_case_counts_only_real_deaths_through_a_requeue(stack):
    """A finisher that died (every segment stored, the task stale) is a real death: requeued,
    counted, and the next claim finishes from the parts already in the upload."""
    params = {"rows": 3000, "seed": 4}
    one, t1 = built(stack, params=params, parallelism=1)
    task_id, records = coordinate(stack, params=params, parallelism=2)
    original = storage.complete_upload

    def died(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the finisher's process died")

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(storage, "complete_upload", died)
    try:
        fast_worker().handle_batch([records[1]])
        with pytest.raises(SystemExit):
            fast_worker().handle_batch([records[2]])
    finally:
        monkeypatch.setattr(storage, "complete_upload", original)
        monkeypatch.undo()
    age_task(task_id, SETTINGS.stale_after_seconds + 5)
    assert Sweeper(SETTINGS).sweep(now())["requeued"] == 1
    drive(stack)
    task = TaskRepository().get(task_id)
    assert task.status is Status.SUCCEEDED and task.claims == 2 and task.lease == 2
    same_file(stack.get(task_id), task.object_key, t1.object_key)
