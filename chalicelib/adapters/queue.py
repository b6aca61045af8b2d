"""SQS: the build queue and the dead-letter queue."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chalicelib.adapters.aws import client


@lru_cache(maxsize=8)
def queue_url(name: str, url: str = "") -> str:
    return url or client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def send(url: str, body: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
    kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": json.dumps(body, ensure_ascii=False)}
    if attributes:
        kwargs["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        }
    return client("sqs").send_message(**kwargs)["MessageId"]
