"""WORKER_TIMEOUT_SECONDS: the local poller hands each build the countdown Lambda would.

A build that outgrows its invocation's time budget stops cleanly, ``failed`` with
``timeout``, instead of being killed mid-write; a short one within it succeeds;
and with ``parallelism: "auto"`` an export many budgets long is split into
segments that each fit one, and completes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import RunningStack, id_token, start_stack

TIMEOUT = 4
MARGIN = 2  # so a build has 2 s


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("timeout-stack"), WORKER_TIMEOUT_SECONDS=str(TIMEOUT),
                     TIME_BUDGET_MARGIN_SECONDS=str(MARGIN), PROGRESS_INTERVAL_SECONDS="0.5") as running:
        yield running


def run(stack: RunningStack, rows: int, seconds: float = 60, **body: Any) -> dict[str, Any]:
    headers = {"Authorization": id_token(stack, "alice")}
    resp = requests.post(f"{stack.api}/downloads", headers=headers, timeout=30,
                         json={"task_name": f"{rows} rows", "kind": "demo", "params": {"rows": rows},
                               **body})
    assert resp.status_code == 202, resp.text
    task = resp.json()
    deadline = time.monotonic() + seconds
    while task["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, f"{task}\n{stack.log_tail()}"
        time.sleep(0.2)
        task = requests.get(f"{stack.api}/downloads/{task['id']}", headers=headers, timeout=30).json()
    return task


def test_a_build_longer_than_its_budget_stops_cleanly(short_stack: RunningStack) -> None:
    task = run(short_stack, 10_000_000, parallelism=1)  # ~60 s for one worker: far past 2 s
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "timeout"
    assert 0 < task["progress"]["rows"] < 10_000_000
    assert f"(timeout {TIMEOUT} s)" in short_stack.log()


def test_a_build_within_its_budget_succeeds(short_stack: RunningStack) -> None:
    assert run(short_stack, 1000)["status"] == "succeeded"


def test_an_export_of_many_budgets_completes_in_segments(short_stack: RunningStack) -> None:
    from chalicelib.config import Settings
    from chalicelib.exporters import BuildContext
    from chalicelib.exporters.demo import DemoExporter

    rows = 2_000_000  # about 13 s for one worker here: more than six budgets of 2 s
    # parallelism "auto", the default; parts, because no 2 s invocation could hash the one
    # file (composing a single file takes one invocation's pass over its bytes)
    task = run(short_stack, rows, seconds=180, output="parts")
    assert task["status"] == "succeeded", f"{task}\n{short_stack.log_tail()}"
    segments = task["progress"]["segments"]
    assert segments["total"] >= 5 and segments["succeeded"] == segments["total"]
    assert task["progress"]["rows"] == rows == sum(f["rows"] for f in task["files"])
    # the parts, each with its header, are the rows of the file one worker writes (here, in
    # this process, with no budget), in order
    whole = hashlib.sha256()
    for chunk in DemoExporter().stream({"rows": rows, "seed": 0}, "csv", BuildContext(Settings())):
        whole.update(chunk)
    joined = hashlib.sha256()
    for n, part in enumerate(task["files"]):
        data = requests.get(part["url"], timeout=60).content
        assert hashlib.sha256(data).hexdigest() == part["sha256"] and len(data) == part["size"]
        joined.update(data if n == 0 else data.split(b"\r\n", 1)[1])
    assert joined.hexdigest() == whole.hexdigest()
