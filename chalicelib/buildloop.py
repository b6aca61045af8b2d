"""The guarded build, written once: heartbeat, the ladder of reasons to stop, the cleanup.

A whole build, a segment's build and a finalizing all do the same thing
around their own work: beat on a timer, stop at a cancel, a lost lease or a
spent time budget, turn an export's error into the task's, and leave nothing
half-written behind whatever way they stop. ``run_guarded`` is that, and its
``Stopped`` answer is what each caller maps to the task's next state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from chalicelib.errors import ExportError
from chalicelib.heartbeat import Beat, Canceled, Heartbeat, LeaseLost, OutOfTime
from chalicelib.task import TaskError

log = logging.getLogger(__name__)

T = TypeVar("T")
RemainingMs = Callable[[], int]

#: One text for every build that ran out of its invocation's time.
TIMEOUT_MESSAGE = ("The export did not finish within the worker's time limit; ask for more "
                   "parallelism, narrow it (fewer rows, filters), or ask an operator to raise the limit.")
INTERNAL_MESSAGE = "The export failed because of an internal error."


class Why(StrEnum):
    #: the owner asked for a cancel: acknowledge it
    CANCELED = "canceled"
    #: another build holds the task (or segment) now: touch nothing of it
    LEASE_LOST = "lease_lost"
    #: the invocation's time is nearly spent (``error`` is the timeout's)
    OUT_OF_TIME = "out_of_time"
    #: the export failed with a code (``error``)
    FAILED = "failed"


@dataclass(frozen=True)
class Stopped:
    """Why a guarded build stopped before its work was done; ``error`` for the two failures."""

    why: Why
    error: TaskError | None = None


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


def run_guarded(
    beat: Beat, settings: Any, remaining_ms: RemainingMs, work: Callable[[Heartbeat], T],
    commit: Callable[[T], T] | None = None, cleanup: Callable[[], None] | None = None,
    what: str = "build",
) -> Done[T] | Stopped:
    """Run ``work`` under a heartbeat; then, still ours and not canceled, ``commit``.

    ``work`` gets the heartbeat to ``check()`` between chunks. The beat that
    follows it makes sure the lease still holds before ``commit`` makes the
    result visible (completes an upload). ``cleanup`` runs whenever it stops
    early, for whatever reason, so nothing it started is left open.
    """
    heart = Heartbeat(beat, settings.progress_interval_seconds, remaining_ms,
                      settings.time_budget_margin_seconds * 1000)
    try:
        with heart:
            value = work(heart)
            heart.beat_now()
            heart.check()
            if commit is not None:
                value = commit(value)
        return Done(value)
    except Canceled:
        stopped = Stopped(Why.CANCELED)
    except LeaseLost:
        log.warning("%s: no longer ours; stopped", what)
        stopped = Stopped(Why.LEASE_LOST)
    except OutOfTime:
        stopped = Stopped(Why.OUT_OF_TIME, TaskError("timeout", TIMEOUT_MESSAGE))
    except ExportError as exc:
        stopped = Stopped(Why.FAILED, TaskError(exc.code, exc.message))
    except Exception:
        log.exception("%s failed unexpectedly", what)
        stopped = Stopped(Why.FAILED, TaskError("internal_error", INTERNAL_MESSAGE))
    if cleanup is not None:
        try:
            cleanup()
        except Exception:
            log.exception("%s: could not clean up after stopping", what)
    return stopped


__all__ = ["INTERNAL_MESSAGE", "TIMEOUT_MESSAGE", "Done", "Stopped", "Why", "run_guarded"]
