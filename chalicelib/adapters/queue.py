"""SQS: the build queue and the dead-letter queue."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chalicelib.adapters.aws import client


@lru_cache(maxsize=8)
def queue_url(name: str, url: str = "") -> str:
    return url or client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def send(url: str, body: dict[str, Any], attributes: dict[str, str] | None = None,
         delay_seconds: int = 0) -> str:
    kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": json.dumps(body, ensure_ascii=False)}
    if delay_seconds:
        kwargs["DelaySeconds"] = max(0, min(900, delay_seconds))
    if attributes:
        kwargs["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        }
    return client("sqs").send_message(**kwargs)["MessageId"]


def send_many(url: str, bodies: list[dict[str, Any]]) -> None:
    """Send every body, ten to a call; raise if any could not be sent (sending again is harmless)."""
    sqs = client("sqs")
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(b, ensure_ascii=False)}
                   for i, b in enumerate(bodies[start:start + 10])]
        failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
        if failed:
            raise RuntimeError(f"{len(failed)} message(s) not sent: {failed[0].get('Message')}")
