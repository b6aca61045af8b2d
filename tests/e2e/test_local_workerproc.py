"""LOCAL_WORKER_MODE=processes: each build consumer is a child process of the stack, as Lambda's sandboxes.

Observables: the stack announces its children's pids; a build's own lines
(``chalicelib.worker[PID]: task … succeeded``) name the process that ran it,
which must be one of those children and not the stack; the kernel's
``/proc`` says whose children they are and which process group they are in.
Stopping the stack with SIGTERM lets a running build finish and leaves no
process of the stack's group behind; killing the stack alone (SIGKILL, no
chance to clean up) makes the children exit on their own.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import RunningStack, id_token, start_stack

HTTP_TIMEOUT = 30
BUILD_TIMEOUT = 120.0
EXIT_TIMEOUT = 60.0
TERMINAL = {"succeeded", "failed", "canceled"}
ANNOUNCED = re.compile(r"worker processes: .* \(pids ([\d, ]+); timeout")


def announced_pids(stack: RunningStack) -> list[int]:
    found = ANNOUNCED.search(stack.log())
    assert found, stack.log_tail()
    return [int(pid) for pid in found.group(1).split(", ")]


def proc_stat(pid: int) -> dict[str, Any] | None:
    """State, parent and process group of ``pid`` from /proc (None: no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return {"state": fields[0], "ppid": int(fields[1]), "pgid": int(fields[2])}


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    stat = proc_stat(pid)
    return stat is not None and stat["state"] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (the stack's: start_stack gives it a session of its own)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat["pgid"] == pgid and stat["state"] not in ("Z", "X"):
                members.append(int(entry))
    return members


def create_demo(stack: RunningStack, headers: dict[str, str], rows: int) -> str:
    resp = requests.post(f"{stack.api}/downloads", headers=headers, timeout=HTTP_TIMEOUT,
                         json={"task_name": f"{rows} rows", "kind": "demo", "params": {"rows": rows}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def wait_for(stack: RunningStack, headers: dict[str, str], task_id: str,
             statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + BUILD_TIMEOUT
    while True:
        resp = requests.get(f"{stack.api}/downloads/{task_id}", headers=headers, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, resp.text
        task = resp.json()
        if task["status"] in statuses:
            return dict(task)
        if time.monotonic() > deadline:
            pytest.fail(f"{task_id} still {task['status']} after {BUILD_TIMEOUT:.0f} s:\n{stack.log_tail()}")
        time.sleep(0.2)


def builder_pid(stack: RunningStack, task_id: str) -> int:
    """The process whose worker logged the build's success."""
    found = re.search(rf"chalicelib\.worker\[(\d+)\]: task {task_id} succeeded", stack.log())
    assert found, stack.log_tail()
    return int(found.group(1))


def wait_gone(pids: list[int], pgid: int) -> None:
    deadline = time.monotonic() + EXIT_TIMEOUT
    while any(running(pid) for pid in pids) or group_members(pgid):
        if time.monotonic() > deadline:
            pytest.fail(f"still running: {[p for p in pids if running(p)]}, group {group_members(pgid)}")
        time.sleep(0.2)


def test_builds_run_in_child_processes_that_stop_with_the_stack(tmp_path: Path) -> None:
    with start_stack(tmp_path, LOCAL_WORKERS="2", LOCAL_WORKER_MODE="processes") as stack:
        stack_pid = stack.proc.pid
        assert ("builds        2 at a time (LOCAL_WORKERS), each in a process of its own "
                "(LOCAL_WORKER_MODE)") in stack.log()
        pids = announced_pids(stack)
        assert len(set(pids)) == 2 and stack_pid not in pids
        for pid in pids:
            stat = proc_stat(pid)
            assert stat is not None and stat["ppid"] == stack_pid and stat["pgid"] == stack_pid, stat

        alice = {"Authorization": id_token(stack, "alice")}
        small = create_demo(stack, alice, 1000)
        assert wait_for(stack, alice, small, TERMINAL)["status"] == "succeeded"
        assert builder_pid(stack, small) in pids

        # SIGTERM while a build runs: it finishes, as with the threads, and nothing is left behind
        big = create_demo(stack, alice, 500_000)
        assert wait_for(stack, alice, big, {"running"} | TERMINAL)["status"] == "running"
        os.kill(stack_pid, signal.SIGTERM)
        assert stack.proc.wait(EXIT_TIMEOUT) == 0, stack.log_tail()
        assert builder_pid(stack, big) in pids
        assert "worker processes stopped" in stack.log()
        assert "killed" not in stack.log(), stack.log_tail()
        wait_gone(pids, stack_pid)


def test_child_processes_exit_when_the_stack_is_killed(tmp_path: Path) -> None:
    with start_stack(tmp_path, LOCAL_WORKERS="2", LOCAL_WORKER_MODE="processes") as stack:
        pids = announced_pids(stack)
        assert all(running(pid) for pid in pids)
        os.kill(stack.proc.pid, signal.SIGKILL)  # the stack alone, not its group: it cannot clean up
        stack.proc.wait(EXIT_TIMEOUT)
        wait_gone(pids, stack.proc.pid)
        for pid in pids:
            assert f"local.workerproc[{pid}]: the stack is gone: exiting" in stack.log()
