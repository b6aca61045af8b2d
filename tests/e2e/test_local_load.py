"""The local stack under load: many clients at once, and builds side by side.

A stack of its own (see conftest.py), so a long build here cannot slow down
the round trips of test_local_stack.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import PROJECT_DIR, RunningStack, free_ports, id_token

HTTP_TIMEOUT = 30.0
# Connections opened back to back: far more than socketserver's default listen
# backlog of 5, well under the 128 the local API asks for.
BURST = 60
# Linux drops a SYN that finds the listen queue full and the client resends it
# after 1 s (macOS answers with a reset instead). A loopback handshake the kernel
# completes at once takes microseconds, however busy the server process is.
HANDSHAKE_LIMIT = 0.9
# About 20 s of building on this machine (some 250,000 csv rows/s); the test
# cancels it as soon as the short export is through.
LONG_ROWS = 5_000_000
SHORT_ROWS = 10
BUILD_TIMEOUT = 60.0
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


@dataclass
class Outcome:
    """What one client of the burst saw."""

    path: str
    handshake: float | None = None
    status: int | None = None
    body: Any = None
    error: str | None = None
    elapsed: float = 0.0


def connect_burst(api_url: str, count: int) -> tuple[list[socket.socket], list[float | None]]:
    """Start ``count`` TCP connects back to back, then wait for each handshake.

    Non-blocking connects from one thread reach the server within a
    millisecond or two, which threads doing blocking connects (serialised by
    the GIL) do not: this is what fills a short listen queue.
    """
    parts = urlsplit(api_url)
    address = (parts.hostname, parts.port)
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
    started = time.monotonic()
    handshakes: list[float | None] = [None] * count
    waiting = dict(enumerate(socks))
    while waiting and time.monotonic() - started < HTTP_TIMEOUT:
        _, writable, _ = select.select([], list(waiting.values()), [], 0.05)
        now = time.monotonic()
        for index, sock in list(waiting.items()):
            if sock in writable:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                handshakes[index] = now - started if error == 0 else None
                del waiting[index]
    return socks, handshakes


def request_on(sock: socket.socket, host: str, path: str, headers: dict[str, str], outcome: Outcome) -> None:
    """One HTTP request on an already connected socket; records the answer or the error."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, timeout=HTTP_TIMEOUT)
    sock.setblocking(True)
    sock.settimeout(HTTP_TIMEOUT)
    conn.sock = sock  # already connected: http.client skips its own connect
    try:
        conn.request("GET", path, headers={**headers, "Connection": "close"})
        response = conn.getresponse()
        outcome.status = response.status
        outcome.body = json.loads(response.read())
    except Exception as exc:  # ConnectionResetError, RemoteDisconnected, timeouts
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        outcome.elapsed = time.monotonic() - started
        conn.close()


@pytest.fixture(scope="module")
def alice(local_stack: RunningStack) -> dict[str, str]:
    return {"Authorization": id_token(local_stack, "alice")}


def test_a_burst_of_clients_is_served(local_stack: RunningStack, alice: dict[str, str]) -> None:
    """BURST clients connect at the same instant; every one is answered, none stalls or is reset."""
    paths = ["/health", "/downloads"] * (BURST // 2)
    outcomes = [Outcome(path) for path in paths]
    host = urlsplit(local_stack.api).netloc
    socks, handshakes = connect_burst(local_stack.api, len(paths))
    barrier = threading.Barrier(len(paths))

    def client(index: int) -> None:
        outcome = outcomes[index]
        outcome.handshake = handshakes[index]
        headers = alice if outcome.path == "/downloads" else {}
        barrier.wait()
        if outcome.handshake is None:
            outcome.error = "connect failed or timed out"
            socks[index].close()
            return
        request_on(socks[index], host, outcome.path, headers, outcome)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT + 5)

    failed = [o for o in outcomes if o.error or o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[:3]}"
    slow = [o for o in outcomes if o.handshake is None or o.handshake > HANDSHAKE_LIMIT]
    assert not slow, (
        f"{len(slow)} handshakes took over {HANDSHAKE_LIMIT} s (listen queue full?): "
        f"{sorted(round(o.handshake or -1, 3) for o in slow)}"
    )
    for outcome in outcomes:
        if outcome.path == "/health":
            assert outcome.body == {"status": "ok"}
        else:
            assert isinstance(outcome.body["items"], list), outcome.body
    print(
        f"{len(outcomes)} clients: slowest handshake {max(o.handshake or 0 for o in outcomes):.3f} s, "
        f"slowest answer {max(o.elapsed for o in outcomes):.2f} s"
    )


def create_demo(stack: RunningStack, headers: dict[str, str], name: str, rows: int) -> dict[str, Any]:
    body = {"task_name": name, "kind": "demo", "format": "csv", "params": {"rows": rows}}
    resp = requests.post(f"{stack.api}/downloads", json=body, headers=headers, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 202, resp.text
    return resp.json()


def get_task(stack: RunningStack, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    resp = requests.get(f"{stack.api}/downloads/{task_id}", headers=headers, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_for(
    stack: RunningStack, headers: dict[str, str], task_id: str, statuses: set[str]
) -> dict[str, Any]:
    """Poll the task until its status is one of ``statuses`` (or fail with the stack's log)."""
    deadline = time.monotonic() + BUILD_TIMEOUT
    while True:
        task = get_task(stack, headers, task_id)
        if task["status"] in statuses:
            return task
        if time.monotonic() > deadline:
            pytest.fail(f"{task_id} still {task['status']} after {BUILD_TIMEOUT:.0f} s:\n{stack.log_tail()}")
        time.sleep(0.2)


def test_the_pool_size_is_announced(local_stack: RunningStack) -> None:
    assert "builds        2 at a time (LOCAL_WORKERS)" in local_stack.log()


def test_a_short_build_overtakes_a_long_one(local_stack: RunningStack, alice: dict[str, str]) -> None:
    """A big export must not hold up a small one: the stack runs builds side by side, as Lambda does."""
    long_task = create_demo(local_stack, alice, "long", LONG_ROWS)
    try:
        # Once it runs, the long build holds one worker; a batch of both is impossible.
        wait_for(local_stack, alice, long_task["id"], {"running"} | TERMINAL)
        started = time.monotonic()
        short_task = create_demo(local_stack, alice, "short", SHORT_ROWS)
        short_task = wait_for(local_stack, alice, short_task["id"], TERMINAL)
        short_took = time.monotonic() - started
        long_task = get_task(local_stack, alice, long_task["id"])
        assert short_task["status"] == "succeeded", short_task
        assert long_task["status"] == "running", f"the long build ended first: {long_task}"
        print(f"short export done in {short_took:.1f} s while the long one was at {long_task['progress']}")
    finally:
        resp = requests.post(
            f"{local_stack.api}/downloads/{long_task['id']}/cancel", headers=alice, timeout=HTTP_TIMEOUT
        )
    assert resp.status_code == 202, resp.text
    assert wait_for(local_stack, alice, long_task["id"], TERMINAL)["status"] == "canceled"


@pytest.mark.parametrize("name,value", [("LOCAL_WORKERS", "0"), ("LOCAL_WORKERS", "two"),
                                        ("SWEEP_INTERVAL_SECONDS", "0"),
                                        ("SWEEP_INTERVAL_SECONDS", "soon"),
                                        ("LOCAL_WORKER_MODE", "fork")])
def test_bad_local_settings_stop_start_up(tmp_path: Any, name: str, value: str) -> None:
    """A bad LOCAL_WORKERS, LOCAL_WORKER_MODE or SWEEP_INTERVAL_SECONDS is refused at once, naming it."""
    moto_port, api_port = free_ports(2)
    env = {
        **os.environ,
        name: value,
        "MOTO_PORT": str(moto_port),
        "PORT": str(api_port),
        "STACK_FILE": str(tmp_path / "stack.json"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "local.stack"],
        cwd=PROJECT_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"ERROR .*{name}=", result.stdout), result.stdout
    assert "moto server on" not in result.stdout
