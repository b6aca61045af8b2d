"""WORKER_TIMEOUT_SECONDS: the local poller hands each build the countdown Lambda would.

A build that outgrows its invocation's time budget stops cleanly, ``failed`` with
``timeout``, instead of being killed mid-write; a short one within it succeeds.
"""

from __future__ import annotations

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


def run(stack: RunningStack, rows: int) -> dict[str, Any]:
    headers = {"Authorization": id_token(stack, "alice")}
    resp = requests.post(f"{stack.api}/downloads", headers=headers, timeout=30,
                         json={"task_name": f"{rows} rows", "kind": "demo", "params": {"rows": rows}})
    assert resp.status_code == 202, resp.text
    task = resp.json()
    deadline = time.monotonic() + 60
    while task["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, f"{task}\n{stack.log_tail()}"
        time.sleep(0.2)
        task = requests.get(f"{stack.api}/downloads/{task['id']}", headers=headers, timeout=30).json()
    return task


def test_a_build_longer_than_its_budget_stops_cleanly(short_stack: RunningStack) -> None:
    task = run(short_stack, 10_000_000)  # ~40 s of building: far past 2 s
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "timeout"
    assert 0 < task["progress"]["rows"] < 10_000_000
    assert f"(timeout {TIMEOUT} s)" in short_stack.log()


def test_a_build_within_its_budget_succeeds(short_stack: RunningStack) -> None:
    assert run(short_stack, 1000)["status"] == "succeeded"
