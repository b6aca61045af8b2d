"""Segmented builds on the real local stack while the queue is busy and workers die (issue 18).

Both run ``LOCAL_WORKER_MODE=processes`` with two workers and short timers:

- another user's long exports hold both workers while a segmented task's
  segments wait in the queue far longer than ``STALE_AFTER_SECONDS``: the task
  is waiting, not dead, and succeeds with the right bytes;
- a worker process is killed every few seconds while mixed exports of three
  users build: every one succeeds with the right bytes, no upload stays open,
  every quota slot comes back.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from .conftest import RunningStack, id_token, start_stack

HTTP = 30
TERMINAL = {"succeeded", "failed", "canceled"}
STALE = 4
SWEEP = 1


def headers(stack: RunningStack, user: str) -> dict[str, str]:
    return {"Authorization": id_token(stack, user)}


def create(stack: RunningStack, who: dict[str, str], **body: Any) -> str:
    body = {"task_name": body.pop("task_name", "export"), "kind": "demo", **body}
    resp = requests.post(f"{stack.api}/downloads", headers=who, json=body, timeout=HTTP)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def get(stack: RunningStack, who: dict[str, str], task_id: str) -> dict[str, Any]:
    resp = requests.get(f"{stack.api}/downloads/{task_id}", headers=who, timeout=HTTP)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_all(stack: RunningStack, tasks: list[tuple[dict[str, str], str]], seconds: float
             ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        found = [get(stack, who, task_id) for who, task_id in tasks]
        if all(t["status"] in TERMINAL for t in found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"still {[t['status'] for t in found]} after {seconds:.0f} s:\n"
                        f"{stack.log_tail()}")
        time.sleep(0.5)


def check_bytes(task: dict[str, Any]) -> None:
    """The file as a client fetches it (presigned URLs, over HTTP), against what the task says."""
    if task["files"]:
        for f in task["files"]:
            data = requests.get(f["url"], timeout=HTTP).content
            assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
        return
    data = requests.get(task["url"], timeout=HTTP).content
    assert len(data) == task["size"]
    if task["ranges"] is None:
        assert hashlib.sha256(data).hexdigest() == task["sha256"]
        return
    for r in task["ranges"]:
        piece = data[r["start"]:r["start"] + r["size"]]
        assert hashlib.sha256(piece).hexdigest() == r["sha256"], r


def aws(stack: RunningStack, service: str) -> Any:
    return boto3.client(service, endpoint_url=stack.info["aws_endpoint_url"],
                        region_name=stack.info["region"], aws_access_key_id="e2e",
                        aws_secret_access_key="e2e")


def worker_pids(stack: RunningStack) -> list[int]:
    """The stack's worker processes now (a killed one is replaced by a new pid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == stack.proc.pid and b"local.workerproc" in cmdline and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def test_segments_waiting_behind_other_users_builds_are_not_taken_for_dead(tmp_path: Path) -> None:
    # two claims a task: a build that stopped twice fails worker_lost. The segments wait for
    # several staleness windows, which the sweeper used to count as deaths of the task.
    with start_stack(tmp_path, LOCAL_WORKERS="2", LOCAL_WORKER_MODE="processes",
                     STALE_AFTER_SECONDS=str(STALE), SWEEP_INTERVAL_SECONDS=str(SWEEP),
                     MAX_BUILD_CLAIMS="2") as stack:
        bob, alice = headers(stack, "bob"), headers(stack, "alice")
        def long(i: int) -> tuple[dict[str, str], str]:
            return bob, create(stack, bob, task_name=f"long {i}", params={"rows": 1_200_000, "seed": i},
                               parallelism=1)

        longs = [long(i) for i in range(2)]  # both workers busy
        seg = create(stack, alice, task_name="segmented", params={"rows": 60_000, "seed": 3},
                     parallelism=3)  # its plan's messages go behind the ones below
        longs += [long(i) for i in range(2, 4)]
        last = time.monotonic()
        while len(longs) < 10 and get(stack, alice, seg)["status"] not in TERMINAL:
            if time.monotonic() - last > STALE:  # a stream of other builds keeps the queue full
                longs.append(long(len(longs)))
                last = time.monotonic()
            time.sleep(0.5)
        done = wait_all(stack, [(alice, seg), *longs], 600)
        assert [t["status"] for t in done] == ["succeeded"] * len(done), [t["error"] for t in done]
        task = done[0]
        assert task["progress"]["segments"]["total"] == 3 and task["attempts"] == 1
        check_bytes(task)
        log = stack.log()
        # its segments did wait past the staleness cutoff, and nothing took that for a death
        assert re.search(rf"task {seg}: \d segment\(s\) waiting for a worker", log), stack.log_tail()
        assert f"task {seg}: build 1 stopped beating" not in log
        uploads = aws(stack, "s3").list_multipart_uploads(Bucket=stack.info["bucket"])
        assert not uploads.get("Uploads")


def test_segmented_tasks_survive_the_kills_one_worker_tasks_survive(tmp_path: Path) -> None:
    rng = random.Random(18)
    with start_stack(tmp_path, LOCAL_WORKERS="2", LOCAL_WORKER_MODE="processes",
                     STALE_AFTER_SECONDS=str(STALE), SWEEP_INTERVAL_SECONDS=str(SWEEP),
                     MAX_BUILD_CLAIMS="8") as stack:
        users = {name: headers(stack, name) for name in ("alice", "bob", "carol")}
        tasks: list[tuple[dict[str, str], str]] = []
        for i in range(12):
            who = users[("alice", "bob", "carol")[i % 3]]
            rows = rng.choice([300_000, 500_000, 800_000])  # enough work to kill
            if i % 2:
                body: dict[str, Any] = {"parallelism": rng.choice([2, 3])}
                if i % 4 == 3:
                    body["output"] = "parts"
            else:
                body = {"parallelism": 1}
            tasks.append((who, create(stack, who, task_name=f"mixed {i}",
                                      params={"rows": rows, "seed": i}, **body)))
        kills = 0
        deadline = time.monotonic() + 600
        while kills < 8 and time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 2.5))
            if all(get(stack, who, t)["status"] in TERMINAL for who, t in tasks):
                break
            pids = worker_pids(stack)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        assert kills >= 3, "the exports ended before the chaos began"
        done = wait_all(stack, tasks, 600)
        assert [t["status"] for t in done] == ["succeeded"] * len(tasks), \
            [(t["id"], t["error"]) for t in done if t["status"] != "succeeded"]
        for task in done:
            check_bytes(task)
        s3 = aws(stack, "s3")
        assert not s3.list_multipart_uploads(Bucket=stack.info["bucket"]).get("Uploads")
        for who in users.values():  # every quota slot came back: each may hold its cap again
            listed = requests.get(f"{stack.api}/downloads?status=queued,running,canceling",
                                  headers=who, timeout=HTTP).json()["items"]
            assert listed == []
        table = aws(stack, "dynamodb")
        quotas = table.scan(TableName=stack.info["table"], FilterExpression="begins_with(id, :q)",
                            ExpressionAttributeValues={":q": {"S": "quota#"}})["Items"]
        assert all(int(q.get("active", {"N": "0"})["N"]) == 0 for q in quotas), quotas
