"""Stand-in for EventBridge invoking the app's ``@app.on_cw_event`` functions.

Deployed, a rule on the stack's bus invokes the function (``tools/package.py``
points chalice's rule at that bus). moto can match rules but not run a Lambda
function, so here each such function gets the same rule, on the same bus,
with an SQS queue as its target; a poller (:class:`local.poller.SqsPoller`)
hands each queued event to the function as EventBridge would: the event
itself, one at a time. A failing event is retried, twice, as EventBridge
retries an asynchronous invocation, then set aside on a dead-letter queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("local.events")

#: deliveries of one event: the first and EventBridge's two retries
MAX_DELIVERIES = 3
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class EventTarget:
    function: str
    queue_url: str
    queue_arn: str


def event_functions(app_object: Any) -> dict[str, dict[str, Any]]:
    """The app's ``on_cw_event`` functions, by handler name, with their event patterns."""
    found: dict[str, dict[str, Any]] = {}
    for source in getattr(app_object, "event_sources", []):
        pattern = getattr(source, "event_pattern", None)
        if pattern is not None:
            found[source.handler_string.rsplit(".", 1)[-1]] = pattern
    return found


def wire_rules(app_object: Any, sqs: Any, events: Any, bus: str) -> list[EventTarget]:
    """For every event function: its rule on ``bus``, targeting a queue of its own."""
    targets = []
    for function, pattern in event_functions(app_object).items():
        dlq_url = sqs.create_queue(QueueName=f"local-events-{function}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(QueueName=f"local-events-{function}", Attributes={
            "VisibilityTimeout": str(RETRY_AFTER_SECONDS),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": str(MAX_DELIVERIES)}),
        })["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        rule = f"local-{function}"
        events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": function, "Arn": queue_arn}])
        targets.append(EventTarget(function, queue_url, queue_arn))
    return targets


Handler = Callable[[dict[str, Any], Any], Any]


def as_delivered(event: dict[str, Any], account: str) -> dict[str, Any]:
    """The event as EventBridge hands it to a function.

    moto leaves ``account`` out of the event it puts on a queue; EventBridge
    always sends it (and chalice's event object requires it).
    """
    return {"account": account, **event}


def invoke_with_events(function: Handler, account: str) -> Handler:
    """An SQS batch handler that invokes ``function`` with each queued EventBridge event."""

    def handle(sqs_event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        for record in sqs_event.get("Records", []):
            try:
                function(as_delivered(json.loads(record["body"]), account), context)
            except Exception:
                log.exception("event %s failed; EventBridge would retry it", record.get("messageId"))
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    return handle
