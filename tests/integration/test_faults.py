"""Fault injection: the worker dies at each step of a build, and the task still ends right.

A ``Crash`` is a BaseException raised from inside an AWS call (through
botocore's event hooks on the real clients), so none of the worker's own
``except Exception`` handlers runs: no abort, no failure recorded, no event,
as when Lambda kills the process. Then time passes, the sweeper and the
queue do what they do in AWS, and for every crash point the outcome must be:
the task ends ``succeeded``; exactly one object, the one the task names; no
open multipart upload; the terminal event published exactly once; the
owner's quota slot given back.

The same for a real killed process on the local stack: tests/e2e/test_local_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import boto3
import pytest

from chalicelib.adapters.aws import client
from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository
from chalicelib.clock import now
from chalicelib.sweeper import Sweeper
from chalicelib.task import Status

from .conftest import SETTINGS, Stack, create_then_drop_table, fast_worker

BUCKET = SETTINGS.files_bucket
PART = 5 * 1024 * 1024
ROWS = 150_000  # about 10 MiB of csv: three 5 MiB parts


class Crash(BaseException):
    """The process dies here: nothing after this line of the build runs."""


@dataclass(frozen=True)
class Point:
    name: str
    service: str
    event: str  # botocore event: before-call / after-call
    operation: str
    nth: int = 1  # crash on the nth call of the operation


POINTS = [
    Point("after the claim", "s3", "before-call", "CreateMultipartUpload"),
    Point("after the first part", "s3", "before-call", "UploadPart", nth=2),
    Point("before CompleteMultipartUpload", "s3", "before-call", "CompleteMultipartUpload"),
    Point("after CompleteMultipartUpload, before the final write", "s3", "after-call",
          "CompleteMultipartUpload"),
    Point("after the final write, before the event", "events", "before-call", "PutEvents"),
]


@pytest.fixture
def crash_at(request: pytest.FixtureRequest) -> Iterator[Point]:
    point: Point = request.param
    calls = {"n": 0}

    def die(**_: object) -> None:
        calls["n"] += 1
        if calls["n"] == point.nth:
            raise Crash(point.name)

    events = client(point.service).meta.events
    name = f"{point.event}.{point.service}.{point.operation}"
    events.register(name, die)
    yield point
    events.unregister(name, die)


def test_every_crash_point_is_covered() -> None:
    assert len(POINTS) == 5


@pytest.mark.parametrize("crash_at", POINTS, ids=[p.name for p in POINTS], indirect=True)
def test_a_worker_that_dies_leaves_a_task_that_still_ends_right(stack: Stack, crash_at: Point) -> None:
    task_id = stack.create(params={"rows": ROWS})["id"]
    first_delivery = stack.drain()
    worker = fast_worker(part_size_bytes=PART)
    with pytest.raises(Crash):
        worker.handle_batch(first_delivery)
    repo = TaskRepository()
    died = repo.get(task_id)

    # time passes: the sweeper finds what the dead worker left, the queue redelivers
    sweeper = Sweeper(SETTINGS)
    later = now() + timedelta(seconds=SETTINGS.stale_after_seconds + 60)
    sweeper.sweep(later)
    for record in stack.drain() + first_delivery:  # the sweeper's message, then the old one
        worker.handle_batch([record])
    sweeper.sweep(later + timedelta(minutes=10))  # events still pending, orphan uploads

    task = repo.get(task_id)
    assert task.status is Status.SUCCEEDED, (crash_at.name, died.status, task.error)
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == [task.object_key]
    assert s3.head_object(Bucket=BUCKET, Key=task.object_key)["ContentLength"] == task.size
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    published = [(e["detail-type"], e["detail"]["id"]) for e in stack.events()]
    assert published == [("download.succeeded", task_id)]
    assert repo.active_count(task.owner) == 0
    # a build that died before its final write was built again under a new lease
    assert task.lease == (1 if died.status is Status.SUCCEEDED else 2)


def test_a_crash_while_failing_still_ends_failed_once(stack: Stack) -> None:
    """The build fails (a source error) and dies while publishing: one failed event, no file."""
    task_id = create_then_drop_table(stack)["id"]
    events = client("events").meta.events

    def die(**_: object) -> None:
        raise Crash("publishing")

    events.register("before-call.events.PutEvents", die)
    try:
        with pytest.raises(Crash):
            fast_worker().handle_batch(stack.drain())
    finally:
        events.unregister("before-call.events.PutEvents", die)
    Sweeper(SETTINGS).sweep(now() + timedelta(minutes=10))
    task = TaskRepository().get(task_id)
    assert task.status is Status.FAILED and task.error.code == "table_not_found"
    assert [e["detail-type"] for e in stack.events()] == ["download.failed"]
    assert TaskModel.get(task_id).ttl is not None
