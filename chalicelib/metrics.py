"""CloudWatch metrics of builds and sweeps, as Embedded Metric Format lines (Powertools' Metrics).

Namespace ``DownloadCenter``, default dimension ``service=download-center``;
CloudWatch alarms are written against these exact names, so rename nothing.
Values are collected during an invocation and written to stdout by
``flush()``, which app.py's handlers call once, when the invocation ends;
a failure also goes out once more as ``BuildsFailed`` with an ``ErrorCode``
dimension (a blob of its own, so the plain ``BuildsFailed`` keeps only
``service`` for a failure-rate alarm).

Metrics are a side channel: nothing here may break a build, so every entry
point logs its own errors instead of raising them. Powertools' Metrics
object is created on first use, not at import.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec

from chalicelib.logs import SERVICE
from chalicelib.task import Status, Task

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

log = logging.getLogger(__name__)

NAMESPACE = "DownloadCenter"
COUNT, SECONDS, BYTES, COUNT_PER_SECOND = "Count", "Seconds", "Bytes", "Count/Second"

BUILDS_STARTED = "BuildsStarted"
BUILDS_SUCCEEDED = "BuildsSucceeded"
BUILDS_FAILED = "BuildsFailed"
BUILDS_CANCELED = "BuildsCanceled"
BUILD_DURATION = "BuildDuration"
ROWS_EXPORTED = "RowsExported"
BYTES_EXPORTED = "BytesExported"
ROWS_PER_SECOND = "RowsPerSecond"
ERROR_CODE = "ErrorCode"

#: sweeper action (chalicelib.sweeper's counter) -> metric, emitted when the sweep did it
SWEEP_METRICS = {
    "requeued": "Requeued",
    "failed_worker_lost": "WorkerLost",
    "resent": "MessagesResent",
    "event_published": "EventsRepublished",
    "uploads_aborted": "UploadsAborted",
    "error": "SweepErrors",
}

_lock = threading.Lock()  # the local stack runs builds side by side; Powertools' set is shared
_backend: Metrics | None = None
_failed_codes: list[str] = []

P = ParamSpec("P")


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("metrics: %s failed; the metric is lost, the build goes on", fn.__name__,
                        exc_info=True)

    return wrapper


def _metrics() -> Metrics:
    global _backend
    if _backend is None:
        from aws_lambda_powertools import Metrics

        _backend = Metrics(namespace=NAMESPACE, service=SERVICE)
    return _backend


def _add(name: str, unit: str, value: float) -> None:
    with _lock:
        _metrics().add_metric(name=name, unit=unit, value=value)


@_never_raises
def build_started() -> None:
    _add(BUILDS_STARTED, COUNT, 1)


@_never_raises
def build_ended(task: Task | None, seconds: float) -> None:
    """Count a build that ended the task (None: it lost its lease, and another build goes on)."""
    if task is None or task.status not in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED):
        return
    _add(BUILD_DURATION, SECONDS, seconds)
    if task.status is Status.FAILED:
        _add(BUILDS_FAILED, COUNT, 1)
        with _lock:
            _failed_codes.append(task.error.code if task.error else "unknown")
    elif task.status is Status.CANCELED:
        _add(BUILDS_CANCELED, COUNT, 1)
    else:
        rows = int(task.progress.get("rows", 0))
        _add(BUILDS_SUCCEEDED, COUNT, 1)
        _add(ROWS_EXPORTED, COUNT, rows)
        _add(BYTES_EXPORTED, BYTES, task.size or 0)
        if seconds > 0:
            _add(ROWS_PER_SECOND, COUNT_PER_SECOND, rows / seconds)


@_never_raises
def swept(done: Counter[str]) -> None:
    for action, name in SWEEP_METRICS.items():
        if done.get(action):  # an idle sweep (most of them) writes nothing
            _add(name, COUNT, done[action])


@_never_raises
def flush() -> None:
    """Write what this invocation collected as EMF lines on stdout, then forget it."""
    from aws_lambda_powertools.metrics import single_metric

    with _lock:
        codes, _failed_codes[:] = list(_failed_codes), []
        metrics = _backend
        try:
            if metrics is not None and metrics.metric_set:
                metrics.flush_metrics()
        finally:
            if metrics is not None:
                metrics.clear_metrics()  # after a failed flush too: never carried into the next one
        for code in codes:
            with single_metric(name=BUILDS_FAILED, unit=COUNT, value=1, namespace=NAMESPACE,
                               default_dimensions={"service": SERVICE}) as metric:
                metric.add_dimension(name=ERROR_CODE, value=code)


__all__ = ["NAMESPACE", "SWEEP_METRICS", "build_ended", "build_started", "flush", "swept"]
