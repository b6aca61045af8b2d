"""Processes the benchmark runs: a moto server and one fresh child per measurement.

The children get a clean, fixed environment (fake credentials, the
deployment's variables from ``.chalice/config.json``, the moto endpoint) so a
developer's own AWS profile can never be used and every run sees the same
settings the Lambda would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def chalice_env() -> dict[str, str]:
    """The variables the deployed functions get, so Settings.from_env matches production."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    return {k: str(v) for k, v in config.get("environment_variables", {}).items()}


def child_env(endpoint: str | None) -> dict[str, str]:
    """A clean environment: no inherited AWS_* settings, fake credentials, our endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(chalice_env())
    env.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING",
    )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    else:
        # nothing should be called, but if something is, it must stay on this machine
        env["AWS_ENDPOINT_URL"] = f"http://{HOST}:9"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """A moto server in its own process on 127.0.0.1, with the project's resources.

    Its CPU and memory are not the worker's: that is the point of running it
    apart. Its RSS is sampled so the report can say what it cost the machine.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0

    def __enter__(self) -> MotoProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(None),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self._stop()
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        run_child("provision", {}, self.url)
        return self

    def sample(self) -> int:
        """Current RSS of the server, remembering the highest seen."""
        if self._proc is None:
            return 0
        try:
            rss = psutil.Process(self._proc.pid).memory_info().rss
        except psutil.Error:
            return 0
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sample()
        self._stop()


class ChildFailed(RuntimeError):
    pass


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _cpu_seconds(proc: MotoProcess | None) -> float:
    if proc is None or proc._proc is None:
        return 0.0
    try:
        t = psutil.Process(proc._proc.pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def run_child(
    job: str, args: Mapping[str, Any], endpoint: str | None, timeout: float = 900,
    moto: MotoProcess | None = None,
) -> dict[str, Any]:
    """Run ``python -m bench.child JOB ARGS`` in a fresh process; return its JSON result.

    Besides the child's own figures the result carries ``_machine``: the CPU
    seconds the child, the moto server and everything else on the machine
    spent meanwhile. Other people's work on a shared 2-core machine moves
    wall-clock figures, and the report should be able to say so.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0, moto0, t0 = _busy_seconds(), _cpu_seconds(moto), time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", job, json.dumps(dict(args))],
            stdout=out, stderr=err, env=child_env(endpoint), cwd=ROOT,
        )
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if moto is not None:
                moto.sample()
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.1)
        wall = time.monotonic() - t0
        child_cpu = usage.ru_utime + usage.ru_stime
        moto_cpu = _cpu_seconds(moto) - moto0
        others = max(0.0, _busy_seconds() - busy0 - child_cpu - moto_cpu)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise ChildFailed(f"bench.child {job} {dict(args)} exited {proc.returncode}:\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ChildFailed(f"bench.child {job} printed no result:\n{stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["_machine"] = {"wall": wall, "child_cpu": child_cpu, "moto_cpu": moto_cpu,
                          "others_cpu": others}
    return result


class Patience:
    """A budget of seconds the whole benchmark may spend waiting for a quiet machine.

    The measured work is serial (the worker waits while the server works), so
    it needs about one free core of the two. A run that saw more than
    ``threshold`` cores of other load (someone's test suite, say) is repeated
    once the machine is quieter, while the budget lasts, so ``make bench``
    stays within its ten minutes however busy the machine is.
    """

    def __init__(self, budget: float, threshold: float = 0.8) -> None:
        self.left = budget
        self.threshold = threshold
        self.retries = 0

    def wait(self) -> float:
        t0 = time.monotonic()
        share = wait_for_quiet(max(0.0, self.left), self.threshold)
        self.left -= time.monotonic() - t0
        return share

    def run(self, job: str, args: Mapping[str, Any], endpoint: str | None,
            moto: MotoProcess | None = None, tries: int = 3) -> dict[str, Any]:
        """``run_child``, repeated (up to ``tries``) while other load disturbed it; the calmest run."""
        best: dict[str, Any] | None = None
        for attempt in range(tries):
            if attempt:
                self.retries += 1
                self.wait()
            got = run_child(job, args, endpoint, moto=moto)
            share = got["_machine"]["others_cpu"] / max(got["_machine"]["wall"], 1e-9)
            got["_machine"]["others_share"] = share
            if best is None or share < best["_machine"]["others_share"]:
                best = got
            if share <= self.threshold or self.left <= 0:
                break
        assert best is not None
        return best


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 3.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of a core.

    Returns the share of a core they used in the last window, for the report.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = _busy_seconds()
        time.sleep(window)
        share = (_busy_seconds() - before) / window
        if share < threshold or time.monotonic() > deadline:
            return share
        print(f"  (the machine is busy: {share:.2f} cores used by other processes; waiting)",
              file=sys.stderr)
