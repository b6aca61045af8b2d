"""The log keys of a task in flight, and the local stack's console format, without AWS."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from chalicelib import logs
from chalicelib.task import Status, Task
from local.logformat import DATEFMT, FORMAT, ConsoleFormatter


def task(task_id: str, lease: int = 1) -> Task:
    return Task(id=task_id, owner="u-1", owner_name="Alice", tenant="acme", task_name="t",
                file_name="f", kind="demo", format="csv", params={}, status=Status.RUNNING,
                created_at=datetime(2026, 11, 23, tzinfo=UTC), lease=lease)


def keys_in_a_thread_of_its_own() -> dict:
    seen: dict = {}
    thread = threading.Thread(target=lambda: seen.update(logs.current_keys()))
    thread.start()
    thread.join()
    return seen


def test_a_task_scope_names_its_lines_and_leaves_nothing_behind():
    assert "task_id" not in logs.current_keys()
    with logs.keys(message_id="m-1"), logs.for_task(task("T1", lease=3)):
        assert logs.current_keys() == {"message_id": "m-1", "task_id": "T1", "owner": "u-1",
                                       "kind": "demo", "attempt": 3}
    assert logs.current_keys() == {}


def test_a_thread_without_context_gets_the_one_task_in_flight_and_never_a_guess():
    with logs.for_task(task("T1")):
        assert keys_in_a_thread_of_its_own()["task_id"] == "T1"
        other_entered, leave = threading.Event(), threading.Event()

        def other_build() -> None:
            with logs.for_task(task("T2")):
                other_entered.set()
                leave.wait(5)

        other = threading.Thread(target=other_build)
        other.start()
        assert other_entered.wait(5)
        try:
            assert "task_id" not in keys_in_a_thread_of_its_own()  # two in flight: which one?
            assert logs.current_keys()["task_id"] == "T1"  # its own thread still knows
        finally:
            leave.set()
            other.join()


def test_a_request_or_an_invocation_is_never_taken_for_a_build_helper():
    seen: dict = {}

    def api_request() -> None:
        with logs.keys(request_id="r-1", route="GET /kinds"):
            seen["request"] = logs.current_keys()
        with logs.invocation(None):  # the sweeper, say, with no request id to name
            seen["invocation"] = logs.current_keys()

    with logs.for_task(task("T1")):
        thread = threading.Thread(target=api_request)
        thread.start()
        thread.join()
    assert seen["request"] == {"request_id": "r-1", "route": "GET /kinds"}
    assert seen["invocation"] == {"function_request_id": None}


def test_log_level_sets_the_level_of_the_service_and_of_chalicelib():
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(LOG_LEVEL="WARNING", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x",
               AWS_SECRET_ACCESS_KEY="x", AWS_ENDPOINT_URL="http://127.0.0.1:9", PYTHONPATH=str(root))
    script = ("import logging, app\n"
              "for name in ('chalicelib.worker', 'download-center'):\n"
              "    logging.getLogger(name).info('quiet')\n"
              "    logging.getLogger(name).warning('loud')\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["name"], x["level"], x["message"]) for x in lines] == [
        ("chalicelib.worker", "WARNING", "loud"), ("download-center", "WARNING", "loud")]


def record(message: str, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("chalicelib.worker", logging.WARNING, __file__, 1, message, (), exc_info)
    rec.__dict__.update(extra)
    return rec


def test_the_console_shows_the_task_keys_on_the_message_line_before_a_traceback():
    formatter = ConsoleFormatter(FORMAT, DATEFMT)
    keyed = record("task T1 failed", task_id="T1", owner="u-1", kind="demo", attempt=2)
    assert formatter.format(keyed).endswith(
        "WARNING chalicelib.worker: task T1 failed [task_id=T1 owner=u-1 kind=demo attempt=2]")
    assert formatter.format(record("sweep: {}")).endswith("chalicelib.worker: sweep: {}")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        text = formatter.format(record("build failed", exc_info=sys.exc_info(), task_id="T1"))
    first, _, rest = text.partition("\n")
    assert first.endswith("build failed [task_id=T1]")
    assert rest.startswith("Traceback (most recent call last):") and rest.endswith("RuntimeError: boom")
