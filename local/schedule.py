"""Stand-in for the EventBridge schedule that runs ``app.sweeper`` in the deployment.

A thread calls the scheduled handler every ``interval`` seconds with the
event shape EventBridge delivers (a "Scheduled Event") and a Lambda context,
so the local stack repairs dead builds and lost messages the way the
deployment does, only more often.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalice.local import LambdaContext

log = logging.getLogger("local.schedule")


def scheduled_event(region: str, rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
        "resources": [rule_arn], "detail": {},
    }


class Schedule:
    """Calls ``handler(event, context)`` every ``interval`` seconds until stopped."""

    def __init__(
        self, handler: Callable[[dict[str, Any], Any], Any], interval: float, function_name: str,
        region: str, timeout_seconds: int,
    ) -> None:
        self._handler = handler
        self._interval = interval
        self._function_name = function_name
        self._region = region
        self._timeout_seconds = timeout_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedule", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> bool:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        rule = f"arn:aws:events:{self._region}:123456789012:rule/{self._function_name}"
        while not self._stopping.wait(self._interval):
            context = LambdaContext(function_name=self._function_name, memory_size=256,
                                    max_runtime_ms=self._timeout_seconds * 1000)
            try:
                self._handler(scheduled_event(self._region, rule), context)
            except Exception:  # like a failed invocation: the next tick tries again
                log.exception("%s failed; it runs again in %.0f s", self._function_name, self._interval)
            self.runs += 1
