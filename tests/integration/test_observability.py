"""Logs and metrics of real builds against moto: JSON lines with the task's keys, EMF metrics.

The log lines are read from the one handler every line goes through
(``chalicelib.logs.handler()``), pointed at a buffer for the test; the EMF
blobs are what Powertools prints on stdout when an invocation ends.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import app as app_module
from chalicelib import logs, metrics
from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.clock import now
from chalicelib.exporters import REGISTRY, RowExporter, register
from chalicelib.sweeper import Sweeper
from chalicelib.task import Status, Task
from local.schedule import scheduled_event

from .conftest import SETTINGS, claim, create_then_drop_table, fast_worker

MiB = 1024 * 1024
probe_log = logging.getLogger("chalicelib.exporters.probe")

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Every line the service's handler writes meanwhile, parsed (each one must be JSON)."""
    buffer = io.StringIO()
    handler = logs.handler()
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    finally:
        if previous is not None:
            handler.setStream(previous)


@pytest.fixture
def emf(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The EMF blobs printed on stdout meanwhile (nothing left over from earlier tests)."""
    metrics.flush()
    capsys.readouterr()

    def blobs() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [b for b in (json.loads(line) for line in out.splitlines() if line.startswith("{"))
                if "_aws" in b]

    yield blobs


# -- logs ------------------------------------------------------------------------
class Probe(RowExporter):
    """Logs from the build's thread and from a thread of its own, once the heartbeat has spoken."""

    kind = "test_log_probe"
    title = "logs from every thread"
    params_schema = {"type": "object"}
    heartbeat_failed = threading.Event()

    def open(self, params, ctx):
        def rows():
            assert self.heartbeat_failed.wait(10), "the heartbeat thread never beat"
            probe_log.info("exporter line from the build's thread")
            plain = threading.Thread(target=probe_log.info, args=("line from a thread of its own",))
            plain.start()
            plain.join()
            for i in range(12):  # 12 MiB: parts go up on the sender thread
                yield {"i": i, "blob": "x" * MiB}

        return ["i", "blob"], rows()


@pytest.fixture
def probe() -> Iterator[Probe]:
    exporter = Probe()
    Probe.heartbeat_failed.clear()
    register(exporter)
    yield exporter
    REGISTRY.pop(Probe.kind)


@pytest.fixture
def probing_worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A worker whose first heartbeat write fails (a warning, on the heartbeat thread) and whose
    upload sender logs each part it sends."""
    worker = fast_worker(progress_interval_seconds=0.05, part_size_bytes=5 * MiB)
    real_heartbeat, real_send = worker.repo.heartbeat, storage.StreamingUpload._send_part

    def heartbeat(*args: Any, **kwargs: Any) -> Any:
        if not Probe.heartbeat_failed.is_set():
            Probe.heartbeat_failed.set()
            raise RuntimeError("DynamoDB throttled the beat")
        return real_heartbeat(*args, **kwargs)

    def send_part(self: storage.StreamingUpload, number: int, body: bytearray) -> dict[str, Any]:
        logging.getLogger("chalicelib.adapters.storage").info("sending part %d", number)
        return real_send(self, number, body)

    monkeypatch.setattr(worker.repo, "heartbeat", heartbeat)
    monkeypatch.setattr(storage.StreamingUpload, "_send_part", send_part)
    return worker


@pytest.fixture
def another_task_in_flight() -> Iterator[None]:
    """A second task scope open in this process, as when the local stack runs two builds at once."""
    entered, leave = threading.Event(), threading.Event()
    other = _other_task()

    def hold() -> None:
        with logs.for_task(other):
            entered.set()
            leave.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert entered.wait(5)
    yield
    leave.set()
    holder.join(5)


def _other_task() -> Task:
    return Task(id="01OTHERTASK0000000000000000", owner="someone-else", owner_name="x", tenant="t",
                task_name="t", file_name="f", kind="demo", format="csv", params={},
                status=Status.RUNNING, created_at=datetime.now(UTC), lease=7)


def _by(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("name") == name]


def _build_keys(task_id: str) -> dict[str, Any]:
    task = TaskRepository().get(task_id)
    assert task is not None
    return {"task_id": task.id, "owner": task.owner, "kind": task.kind, "attempt": task.lease}


def test_every_line_of_a_build_carries_the_task_keys(stack, probe, probing_worker, json_lines):
    created = stack.create(kind=Probe.kind, format="jsonl", params={})
    assert stack.run_worker(probing_worker) == {"batchItemFailures": []}
    assert stack.get(created["id"])["status"] == "succeeded"
    expected = _build_keys(created["id"])
    assert expected["attempt"] == 1

    lines = json_lines()
    assert lines, "nothing was logged"
    for line in lines:
        assert {k: line.get(k) for k in logs.TASK_KEYS} == expected, line
        assert line["service"] == "download-center" and line["level"] and line["timestamp"]
    # from the build's thread, the heartbeat thread, the upload sender and a thread of its own
    assert _by(lines, "chalicelib.worker")
    assert [x["message"] for x in _by(lines, "chalicelib.heartbeat")][0].startswith("heartbeat failed")
    assert "DynamoDB throttled the beat" in _by(lines, "chalicelib.heartbeat")[0]["exception"]
    assert len(_by(lines, "chalicelib.adapters.storage")) >= 2
    assert {x["message"] for x in _by(lines, probe_log.name)} == {
        "exporter line from the build's thread", "line from a thread of its own"}


def test_threads_of_a_build_keep_its_keys_beside_another_task(stack, probe, probing_worker,
                                                              another_task_in_flight, json_lines):
    """Two tasks in one process: the heartbeat and the sender carry their own build's keys; a
    thread started outside the build's context is not guessed at."""
    created = stack.create(kind=Probe.kind, format="jsonl", params={})
    stack.run_worker(probing_worker)
    expected = _build_keys(created["id"])

    lines = json_lines()
    stray = [x for x in lines if x["message"] == "line from a thread of its own"]
    assert len(stray) == 1 and "task_id" not in stray[0]
    rest = [x for x in lines if x is not stray[0]]
    assert _by(rest, "chalicelib.heartbeat") and _by(rest, "chalicelib.adapters.storage")
    for line in rest:
        assert {k: line.get(k) for k in logs.TASK_KEYS} == expected, line


def test_a_failed_build_logs_its_code_under_the_task_keys(stack, json_lines):
    created = create_then_drop_table(stack)
    stack.run_worker()
    expected = _build_keys(created["id"])
    lines = json_lines()
    failed = [x for x in lines if x["message"].startswith(f"task {created['id']} failed")]
    assert len(failed) == 1 and failed[0]["level"] == "WARNING"
    assert all({k: x.get(k) for k in logs.TASK_KEYS} == expected for x in lines), lines
    assert all(x.get("message_id") for x in lines)  # the SQS message, on every line of the invocation


def test_the_sweeper_logs_what_it_does_to_a_task_under_its_keys(stack, json_lines):
    created = stack.create()
    stack.drain()
    claimed = claim(created["id"], at=now() - timedelta(hours=1))  # a build that died an hour ago
    done = Sweeper(SETTINGS).sweep()
    assert done["requeued"] == 1
    requeued = [x for x in json_lines() if "stopped beating" in str(x["message"])]
    assert len(requeued) == 1
    assert {k: requeued[0].get(k) for k in logs.TASK_KEYS} == {
        "task_id": claimed.id, "owner": claimed.owner, "kind": claimed.kind, "attempt": 1}


def test_an_api_line_names_its_request_and_never_a_build_in_flight(stack, monkeypatch,
                                                                   another_task_in_flight, json_lines):
    """The local stack answers requests beside a build: a request's line must not take its keys."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("catalogue unavailable")

    monkeypatch.setattr(app_module.downloads, "kinds", broken)
    resp = stack.client.http.get("/kinds", headers=stack.users["alice"].headers)
    assert resp.status_code == 500
    [line] = [x for x in json_lines() if str(x["message"]).startswith("unhandled error in kinds")]
    assert line["route"] == "GET /kinds" and line["level"] == "ERROR"
    assert "catalogue unavailable" in line["exception"]
    assert not set(logs.TASK_KEYS) & set(line)


# -- metrics -------------------------------------------------------------------------
def _metric_blob(blobs: list[dict[str, Any]], dimensions: list[list[str]]) -> dict[str, Any]:
    found = [b for b in blobs if b["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == dimensions]
    assert len(found) == 1, blobs
    return found[0]


def _units(blob: dict[str, Any]) -> dict[str, str]:
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "DownloadCenter"
    return {m["Name"]: m["Unit"] for m in directive["Metrics"]}


def test_a_succeeded_build_emits_its_metrics_once_the_invocation_ends(stack, emf):
    created = stack.create(params={"rows": 500})
    stack.run_worker()  # the app's SQS handler, as Lambda calls it
    task = TaskRepository().get(created["id"])
    assert task is not None and task.status is Status.SUCCEEDED

    blobs = emf()
    blob = _metric_blob(blobs, [["service"]])
    assert blob["service"] == "download-center"
    assert _units(blob) == {
        "BuildsStarted": "Count", "BuildsSucceeded": "Count", "BuildDuration": "Seconds",
        "RowsExported": "Count", "BytesExported": "Bytes", "RowsPerSecond": "Count/Second",
    }
    assert blob["BuildsStarted"] == [1.0] and blob["BuildsSucceeded"] == [1.0]
    assert blob["RowsExported"] == [500.0] and blob["BytesExported"] == [float(task.size)]
    assert 0 < blob["BuildDuration"][0] < 60 and blob["RowsPerSecond"][0] > 0
    assert len(blobs) == 1  # no failure by code


def test_a_failed_build_emits_builds_failed_plain_and_by_error_code(stack, emf):
    create_then_drop_table(stack)
    stack.run_worker()

    blobs = emf()
    plain = _metric_blob(blobs, [["service"]])
    assert _units(plain) == {"BuildsStarted": "Count", "BuildsFailed": "Count", "BuildDuration": "Seconds"}
    assert plain["BuildsFailed"] == [1.0] and "ErrorCode" not in plain
    by_code = _metric_blob(blobs, [["service", "ErrorCode"]])
    assert _units(by_code) == {"BuildsFailed": "Count"}
    assert by_code["ErrorCode"] == "table_not_found" and by_code["service"] == "download-center"
    assert by_code["BuildsFailed"] == [1.0]


def _sweep() -> None:
    """The app's scheduled handler, as EventBridge calls it."""
    app_module.sweeper(scheduled_event("us-east-1", "arn:aws:events:us-east-1:123456789012:rule/s"), None)


def test_a_sweep_emits_what_it_did_and_an_idle_one_nothing(stack, emf):
    _sweep()
    assert emf() == []
    created = stack.create()
    stack.drain()
    claim(created["id"], at=now() - timedelta(hours=1))  # a build that died an hour ago
    _sweep()
    blob = _metric_blob(emf(), [["service"]])
    assert _units(blob) == {"Requeued": "Count"} and blob["Requeued"] == [1.0]
    assert blob["service"] == "download-center"


class BrokenBackend:
    metric_set = {"BuildsStarted": {}}

    def __getattr__(self, name: str) -> Any:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"metrics backend is down ({name})")

        return broken


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_broken_metrics_backend_never_changes_a_build(stack, monkeypatch, json_lines, emf, status):
    monkeypatch.setattr(metrics, "_backend", BrokenBackend())
    created = stack.create(params={"rows": 20}) if status == "succeeded" else create_then_drop_table(stack)
    assert stack.run_worker() == {"batchItemFailures": []}  # the handler did not raise either
    task = stack.get(created["id"])
    assert task["status"] == status
    if status == "failed":
        assert task["error"]["code"] == "table_not_found"  # its own code, not internal_error
    warnings = [x for x in json_lines() if str(x["message"]).startswith("metrics:")]
    assert warnings and all(x.get("task_id") == created["id"] for x in warnings
                            if "flush" not in x["message"])
