"""The stack's console: the app's log lines as text in the stack's format, with the task's keys.

Deployed, every line of the app is one JSON object (``chalicelib.logs``). On a
developer's console, among the stack's own text lines and with builds running
side by side, the same lines read better as text, tracebacks as tracebacks,
with the keys a build's lines carry at the end. Only the formatter differs:
the same handler, filter and keys, so what is labelled here is what is
labelled in CloudWatch.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


class ConsoleFormatter(logging.Formatter):
    """``FORMAT`` plus ``[task_id=… owner=… kind=… attempt=…]`` when the line has them."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        from chalicelib.logs import TASK_KEYS

        text = super().formatMessage(record)
        keys = " ".join(f"{k}={record.__dict__[k]}" for k in TASK_KEYS if k in record.__dict__)
        return f"{text} [{keys}]" if keys else text


def use_console_format(fmt: str = FORMAT) -> None:
    """Write the app's lines (imported already: ``app.py`` sets its logging up) as console text.

    ``fmt``: the stack's ``FORMAT``, or a worker process's with its pid (``local.workerproc``).
    """
    from chalicelib import logs

    logs.handler().setFormatter(ConsoleFormatter(fmt, DATEFMT))
