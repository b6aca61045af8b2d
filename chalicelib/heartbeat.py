"""A build's heartbeat on a timer, independent of the bytes the exporter yields.

A selective scan or a log search can read for minutes without producing a
byte while being perfectly alive; beating from the build loop would let the
sweeper take it for dead. So a background thread writes progress every
interval, and the build loop (and the exporters, between source pages) only
look at what the last beat learned: a cancel request, a lost lease, or a
time budget running out.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.task import Status

log = logging.getLogger(__name__)


class StopBuild(Exception):
    """The build must stop; the subclass says why."""


class Canceled(StopBuild):
    """The owner asked for a cancel: acknowledge it."""


class LeaseLost(StopBuild):
    """Another build holds the task now (or it is gone): touch nothing but our own upload."""


class OutOfTime(StopBuild):
    """The invocation's time budget is nearly spent: fail cleanly while we still can."""


Beat = Callable[[], "Status | None"]


class Heartbeat:
    """Beats every ``interval`` seconds on its own thread while the build runs.

    ``beat`` writes progress under the build's lease and returns the task's
    status (None once the lease is lost); ``time_left_ms`` is the Lambda
    context's clock. ``check()`` raises the reason to stop, if any; it is a
    single attribute read, cheap enough for every chunk.
    """

    def __init__(
        self, beat: Beat, interval: float, time_left_ms: Callable[[], int], margin_ms: float,
    ) -> None:
        self._beat = beat
        self._interval = interval
        self._time_left_ms = time_left_ms
        self._margin_ms = margin_ms
        self._stopped = threading.Event()
        # in a copy of the build's context: its log lines carry the build's keys (chalicelib.logs)
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                        name="heartbeat", daemon=True)
        self.reason: StopBuild | None = None
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval) and self.reason is None:
            try:
                self.beat_now()
            except Exception:  # a failed write is retried at the next beat
                log.warning("heartbeat failed; trying again in %.1f s", self._interval, exc_info=True)

    def beat_now(self) -> None:
        """One beat: record progress and learn whether the build may go on."""
        status = self._beat()
        self.beats += 1
        if status is None:
            self.reason = LeaseLost()
        elif status is Status.CANCELING:
            self.reason = Canceled()
        elif self._time_left_ms() < self._margin_ms:
            self.reason = OutOfTime()

    def check(self) -> None:
        if self.reason is not None:
            raise self.reason
