"""The log keys of a task in flight, without AWS."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from chalicelib import logs
from chalicelib.task import Status, Task


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
