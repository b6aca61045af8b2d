"""The local stack's builds in processes of their own (``LOCAL_WORKER_MODE=processes``).

Lambda runs every invocation in a sandbox of its own, so two builds use two
cores. The stack's default runs its ``LOCAL_WORKERS`` consumers as threads of
the one stack process, which also serves moto and the API: Python's GIL then
lets only one of them compute at a time, and two CPU-bound exports take as
long side by side as one after the other. In this mode each consumer is a
child process (``python -m local.workerproc SPEC``) that imports ``app.py``
with the environment the stack built for it, long-polls the build queue and
invokes the worker with Lambda-shaped events: the same :class:`SqsPoller`
loop, one consumer per child.

Lifetime, so that no child outlives the stack:

- ``SIGTERM`` (what :meth:`WorkerProcesses.stop` sends): finish or release
  the current batch, as the threads do, and exit 0;
- ``SIGINT`` is ignored: Ctrl-C reaches the whole foreground process group,
  and the stack stops its children itself, in order (the API first, moto last);
- the stack going away (killed, even with ``SIGKILL``) closes the child's
  standard input, a pipe only the stack holds: the child exits at once, as
  the moto server it talks to died with the stack.

Log lines go to the stack's own stdout, in its format with the child's pid
(``local.poller[12345]: ...``), so the console shows which process ran what.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

log = logging.getLogger("local.workerproc")

#: the format of a child's lines: the stack's, with the process id after the logger's name
CHILD_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
KILL_GRACE = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a child needs besides the environment: the poller's arguments, as the stack computed them."""

    index: int
    queue_url: str
    queue_arn: str
    region: str
    function_name: str
    handler: str
    timeout_seconds: int
    memory_size: int
    batch_size: int
    endpoint_url: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


class WorkerStartError(RuntimeError):
    """A child did not get as far as polling; its own log lines above say why."""


@dataclass
class _Child:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes]


class WorkerProcesses:
    """``len(specs)`` child processes, each one consumer of the build queue (see the module's doc)."""

    def __init__(self, specs: list[WorkerSpec], project_dir: Path, environ: Mapping[str, str]) -> None:
        self._specs = specs
        self._project_dir = project_dir
        self._environ = dict(environ)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [child.proc.pid for child in self._children]

    def start(self) -> None:
        """Start every child and wait until each polls; raise :class:`WorkerStartError` if one cannot."""
        launched: list[tuple[WorkerSpec, subprocess.Popen[bytes], int]] = []
        try:
            for spec in self._specs:  # all at once: their imports overlap
                launched.append((spec, *self._launch(spec)))
            while launched:
                spec, proc, ready_read = launched.pop(0)
                child = self._await_ready(spec, proc, ready_read)
                with self._lock:
                    self._children.append(child)
        except BaseException:
            for _spec, proc, ready_read in launched:
                _kill(proc)
                os.close(ready_read)
            self._kill_all()
            raise
        self._watcher = threading.Thread(target=self._watch, name="worker-processes", daemon=True)
        self._watcher.start()

    def _spawn(self, spec: WorkerSpec) -> _Child:
        return self._await_ready(spec, *self._launch(spec))

    def _launch(self, spec: WorkerSpec) -> tuple[subprocess.Popen[bytes], int]:
        """Start a child; returns it and the pipe on which it says it polls."""
        ready_read, ready_write = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "local.workerproc", spec.to_json(), str(ready_write)],
                cwd=self._project_dir,
                env=self._environ,
                # a pipe only this process writes to: its end closes when we die, however we die
                stdin=subprocess.PIPE,
                pass_fds=(ready_write,),
            )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        return proc, ready_read

    def _await_ready(self, spec: WorkerSpec, proc: subprocess.Popen[bytes], ready_read: int) -> _Child:
        """Wait until the child polls (and close the pipe); kill it and raise if it does not."""
        try:
            ready = _wait_ready(ready_read, READY_TIMEOUT)
        except BaseException:  # the stack interrupted (Ctrl-C while starting): no orphan
            _kill(proc)
            raise
        finally:
            os.close(ready_read)
        if not ready:
            _kill(proc)
            raise WorkerStartError(
                f"worker process {spec.index} (pid {proc.pid}) did not start polling "
                f"(exit status {proc.returncode}); see its lines above")
        log.info("worker process %d: pid %d", spec.index, proc.pid)
        return _Child(spec, proc)

    def _watch(self) -> None:
        """A child that dies on its own (a crash, the OOM killer) is replaced, as Lambda would."""
        while not self._stopping.wait(0.5):
            with self._lock:
                children = list(self._children)
            for child in children:
                status = child.proc.poll()
                if status is None or self._stopping.is_set():
                    continue
                log.warning("worker process %d (pid %d) exited with %s; starting another",
                            child.spec.index, child.proc.pid, status)
                _kill(child.proc)  # reaped already: closes our end of its stdin
                try:
                    replacement = self._spawn(child.spec)
                except (OSError, WorkerStartError) as exc:
                    log.error("worker process %d not replaced: %s", child.spec.index, exc)
                    replacement = None
                with self._lock:
                    self._children.remove(child)
                    if replacement is not None:
                        if self._stopping.is_set():  # stop() began while it started: it has missed it
                            _kill(replacement.proc)
                        else:
                            self._children.append(replacement)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """SIGTERM every child, wait for all (``timeout`` in all); True if every one finished in time.

        A child still busy after ``timeout`` is killed: unlike a thread it
        would otherwise outlive the stack. Its message returns to the queue
        after the visibility timeout, as after a Lambda that was killed.
        """
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(READY_TIMEOUT + 15)
        with self._lock:
            children = list(self._children)
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        # a child gives its build ``timeout`` itself and then exits; the grace is for that exit
        deadline = time.monotonic() + timeout + KILL_GRACE
        busy: list[_Child] = []
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                busy.append(child)
        for child in busy:
            log.warning("worker process %d (pid %d) still busy after %.0f s: killed",
                        child.spec.index, child.proc.pid, timeout)
        self._kill_all()
        if not busy:
            log.info("worker processes stopped")
        return not busy

    def _kill_all(self) -> None:
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            _kill(child.proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL (if still running), reap, and close our end of its stdin."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdin is not None:
        proc.stdin.close()


def _wait_ready(fd: int, timeout: float) -> bool:
    """True once the child wrote its ready byte; False if it closed the pipe (exited) or took too long."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable) and os.read(fd, 1) == b"1"


# --- the child -----------------------------------------------------------------------------------


def _watch_parent(stdin: TextIO) -> None:
    """Exit at once when the stack is gone: its end of our stdin closes with it (EOF)."""
    try:
        while stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    log.warning("the stack is gone: exiting")
    logging.shutdown()
    os._exit(1)


def child_main(argv: list[str]) -> int:
    """One consumer of the build queue, started by :class:`WorkerProcesses`."""
    spec = WorkerSpec.from_json(argv[0])
    ready_fd = int(argv[1])
    stopping = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack handles Ctrl-C and stops us
    threading.Thread(target=_watch_parent, args=(sys.stdin,), name="parent-watch", daemon=True).start()

    from local.stack import configure_logging

    configure_logging(CHILD_FORMAT)

    import importlib

    import boto3

    from local.logformat import use_console_format
    from local.poller import SqsPoller

    app_module = importlib.import_module("app")
    use_console_format(CHILD_FORMAT)
    poller = SqsPoller(
        sqs_client=boto3.client("sqs", endpoint_url=spec.endpoint_url, region_name=spec.region),
        handler=getattr(app_module, spec.handler),
        queue_url=spec.queue_url,
        queue_arn=spec.queue_arn,
        region=spec.region,
        function_name=spec.function_name,
        timeout_seconds=spec.timeout_seconds,
        memory_size=spec.memory_size,
        batch_size=spec.batch_size,
        workers=1,
        first_worker=spec.index,
    )
    if stopping.is_set():  # asked to stop while importing the app
        return 0
    poller.start()
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    while not stopping.wait(3600):
        pass
    # a build still running after this is left behind, as the stack leaves a thread's: the
    # process exits and its message returns after the visibility timeout
    return 0 if poller.stop(STOP_TIMEOUT) else 1


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
