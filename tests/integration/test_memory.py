"""A large export keeps the worker's memory bounded.

The worker runs in this process against a moto server in another process,
so tracemalloc sees the worker's allocations only, not the stored file.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
import requests

from chalicelib.adapters import aws, queue
from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository, configure
from chalicelib.services import Downloads, Owner
from chalicelib.task import Status
from chalicelib.validation import parse_create
from chalicelib.worker import Worker

from .conftest import SETTINGS

PART = 5 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url + "/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        aws.reset()
        queue.queue_url.cache_clear()
        configure(SETTINGS.tasks_table)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        aws.reset()
        queue.queue_url.cache_clear()
        configure(SETTINGS.tasks_table)


def test_worker_memory_stays_far_below_the_file_size(moto_server):
    from local.provision import provision

    provision(moto_server)
    settings = replace(SETTINGS, part_size_bytes=PART)
    owner = Owner("mem-sub", "mem", "acme")
    req = parse_create({"task_name": "big", "kind": "demo", "params": {"rows": 700_000}})
    task, _ = Downloads(settings).store_new(owner, req, {}, None)
    worker = Worker(settings)
    # a small build first, so botocore's one-off model loading is not counted
    warm = parse_create({"task_name": "warm", "kind": "demo", "params": {"rows": 10}})
    worker.build(Downloads(settings).store_new(owner, warm, {}, None)[0].id)

    tracemalloc.start()
    try:
        worker.build(task.id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    done = TaskRepository().get(task.id)
    assert done is not None and done.status is Status.SUCCEEDED
    assert done.size > 45 * 1024 * 1024
    # two part buffers (one filling, one on the wire) with a little room; botocore copies neither
    assert peak < 3 * PART, f"peak {peak / 2**20:.1f} MiB for a {done.size / 2**20:.0f} MiB file"
    assert peak < done.size / 2
    body = boto3.client("s3", endpoint_url=moto_server).get_object(
        Bucket=SETTINGS.files_bucket, Key=done.object_key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(1 << 20), b""):
        digest.update(chunk)
    assert digest.hexdigest() == done.sha256
    assert TaskModel.Meta.table_name == SETTINGS.tasks_table
    assert os.environ["AWS_ENDPOINT_URL"] == moto_server


def test_a_segments_memory_stays_at_its_part_buffers(moto_server):
    """A single file's segment writes into the task's upload holding back its last part: still
    two part buffers (and the joined last part), whatever the segment's size."""
    import json

    from local.provision import provision

    provision(moto_server)
    settings = replace(SETTINGS, part_size_bytes=PART)
    owner = Owner("mem-sub", "mem", "acme")
    req = parse_create({"task_name": "big", "kind": "demo", "params": {"rows": 1_400_000},
                        "parallelism": 2})
    task, _ = Downloads(settings).store_new(owner, req, {}, None)
    worker = Worker(settings)
    warm = parse_create({"task_name": "warm", "kind": "demo", "params": {"rows": 10}})
    worker.build(Downloads(settings).store_new(owner, warm, {}, None)[0].id)
    worker.build(task.id)  # the coordinator: plans, opens the upload, sends two segment messages
    sqs = boto3.client("sqs", endpoint_url=moto_server)
    url = queue.queue_url(settings.build_queue_name, settings.build_queue_url)
    records = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        records += [{"messageId": m["MessageId"], "body": m["Body"]} for m in got
                    if json.loads(m["Body"]).get("type") == "download.segment"]
    assert len(records) == 2
    tracemalloc.start()
    try:
        worker.handle_batch(records[:1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seg = TaskRepository().get(task.id).segments
    stored = [s for s in seg if s.size]
    assert len(stored) == 1 and stored[0].size > 45 * 1024 * 1024
    assert peak < 4 * PART, f"peak {peak / 2**20:.1f} MiB for a {stored[0].size / 2**20:.0f} MiB segment"
    worker.handle_batch(records[1:])
    done = TaskRepository().get(task.id)
    assert done.status is Status.SUCCEEDED and len(done.ranges) == 2
