"""Structured JSON logs: Powertools' Logger, with the task's keys on every line of a build.

Every line goes out as one JSON object (Powertools' formatter): the service
logger of app.py and, through the same handler, the stdlib loggers of every
``chalicelib`` module. While a build (or a sweep of one task) runs, its keys
(``task_id``, ``owner``, ``kind``, ``attempt``, the build's lease) are on
each line, whichever module logs it.

The keys live in a context variable rather than on the formatter: the local
stack runs several builds side by side in one process, and a formatter-wide
key would label one build's lines with another's. Threads a build starts
(the heartbeat, the upload sender) run in a copy of its context and so carry
its keys. A thread started without any context of ours (a library's, an
exporter's) gets the keys of the one task in flight when there is exactly
one, which in Lambda, one build an invocation, is always the case; with more
than one they are left out rather than guessed. Lines of an API request or
of an invocation outside a task have keys of their own (``request``,
``invocation``), so they are never taken for such a thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from chalicelib.task import Task

SERVICE = "download-center"
#: the keys every line of a build carries
TASK_KEYS = ("task_id", "owner", "kind", "attempt")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_keys: ContextVar[Mapping[str, Any]] = ContextVar("download_center_log_keys", default=_EMPTY)
#: keys of the task scopes open in this process, for threads that did not inherit a context
_open: dict[int, Mapping[str, Any]] = {}
_open_lock = threading.Lock()
_scope_ids = itertools.count()
_logger: Logger | None = None


def task_keys(task: Task) -> dict[str, Any]:
    return {"task_id": task.id, "owner": task.owner, "kind": task.kind, "attempt": task.lease}


def current_keys() -> dict[str, Any]:
    """The keys a line logged here and now carries."""
    keys = _keys.get()
    if not keys:  # no invocation, request or build set this thread up: a build's helper
        with _open_lock:
            if len(_open) == 1:
                keys = {**next(iter(_open.values())), **keys}
    return dict(keys)


@contextmanager
def keys(**values: Any) -> Iterator[None]:
    """Add ``values`` to every line logged in this block (and in threads started in its context)."""
    token = _keys.set({**_keys.get(), **values})
    try:
        yield
    finally:
        _keys.reset(token)


@contextmanager
def for_task(task: Task) -> Iterator[None]:
    """The task's keys on every line of this block; the block is a task in flight."""
    scope = next(_scope_ids)
    with keys(**task_keys(task)):
        with _open_lock:
            _open[scope] = _keys.get()
        try:
            yield
        finally:
            with _open_lock:
                _open.pop(scope, None)


class KeysFilter(logging.Filter):
    """Stamps the current keys on each record; Powertools renders them as top-level JSON keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_keys().items():
            record.__dict__.setdefault(name, value)  # a key passed in ``extra`` wins
        return True


def setup(level: str | None = None) -> Logger:
    """Configure logging once, from app.py: the service logger and chalicelib's, as JSON lines.

    ``LOG_LEVEL`` (default INFO) sets the level of both. ``chalicelib``'s
    loggers stop propagating to the root logger: in Lambda its handler is
    the runtime's plain-text one, and every line would be written twice.
    """
    global _logger
    if _logger is not None:
        return _logger
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logger = Logger(service=SERVICE, level=level or os.environ.get("LOG_LEVEL", "INFO"),
                    use_rfc3339=True, utc=True)
    logger.registered_handler.addFilter(KeysFilter())
    logging.getLogger("chalicelib")  # registered, so that the copy below finds it
    copy_config_to_registered_loggers(source_logger=logger, include={"chalicelib"})
    _logger = logger
    return logger


def handler() -> logging.Handler:
    """The one handler every line goes through (tests point its stream elsewhere)."""
    return setup().registered_handler


@contextmanager
def invocation(context: Any) -> Iterator[None]:
    """A Lambda invocation: its request id on every line logged while it runs (None: left out)."""
    with keys(function_request_id=getattr(context, "aws_request_id", None)):
        yield


@contextmanager
def request(event: Any) -> Iterator[None]:
    """An API request (chalice's ``Request``): its ids and route on every line logged meanwhile."""
    context = event.context or {}
    with invocation(getattr(event, "lambda_context", None)), \
            keys(request_id=context.get("requestId"), route=f"{event.method} {event.path}"):
        yield


__all__ = ["SERVICE", "TASK_KEYS", "KeysFilter", "current_keys", "for_task", "handler", "invocation",
           "keys", "request", "setup", "task_keys"]
