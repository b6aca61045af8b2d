"""Run the real ``python -m local.stack`` as a subprocess, on free ports.

The stack writes its description to a temporary ``STACK_FILE`` (never the
developer's ``.local/stack.json``); the fixture waits for that file, which is
the stack's readiness signal, and always kills the process group it created.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

# re-exported: the closing summary's lines are gathered in tests/conftest.py, which also
# brings them back from the workers of `make test`
from local.stack import app_setting_names
from tests.conftest import add_summary_line  # noqa: F401

PROJECT_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    stack_file: Path
    log_file: Path
    info: dict[str, Any]

    @property
    def api(self) -> str:
        return self.info["api_url"]

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def id_token(stack: RunningStack, username: str) -> str:
    """Log in as a client would: InitiateAuth USER_PASSWORD_AUTH against the pool."""
    info = stack.info
    user = next(u for u in info["users"] if u["username"] == username)
    idp = boto3.client(
        "cognito-idp",
        endpoint_url=info["aws_endpoint_url"],
        region_name=info["region"],
        aws_access_key_id="e2e",
        aws_secret_access_key="e2e",
    )
    result = idp.initiate_auth(
        ClientId=info["client_id"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": user["password"]},
    )
    return result["AuthenticationResult"]["IdToken"]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this fixture created (start_new_session=True).

    Even when the stack itself has exited: its worker processes
    (``LOCAL_WORKER_MODE=processes``) are in the group too. The group's id
    stays reserved while any member lives, so this reaches no one else's.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextlib.contextmanager
def start_stack(tmp: Path, **extra_env: str) -> Iterator[RunningStack]:
    """``python -m local.stack`` on free ports, with ``extra_env``; killed on exit."""
    stack_file = tmp / "stack.json"
    log_file = tmp / "stack.log"
    moto_port, api_port = free_ports(2)
    env = {
        **os.environ,
        "MOTO_PORT": str(moto_port),
        "PORT": str(api_port),
        "STACK_FILE": str(stack_file),
        "PYTHONUNBUFFERED": "1",
    }
    # the defaults, whatever the developer's shell (or another test module) sets: the
    # environment wins over .chalice/config.json for a local run
    for name in ("LOCAL_WORKERS", "LOCAL_WORKER_MODE", "SWEEP_INTERVAL_SECONDS", "WORKER_TIMEOUT_SECONDS",
                 *app_setting_names()):
        env.pop(name, None)
    env.update(extra_env)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.stack"],
            cwd=PROJECT_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningStack(proc, stack_file, log_file, {})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not stack_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"local stack exited with {proc.returncode}:\n{running.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no stack file after {START_TIMEOUT:.0f} s:\n{running.log_tail()}")
            time.sleep(0.2)
        running.info = json.loads(stack_file.read_text(encoding="utf-8"))
        yield running
    finally:
        _kill_group(proc)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running
