"""EventBridge: one event per terminal task state."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.aws import client

SOURCE = "download-center"


def publish(bus: str, detail_type: str, detail: dict[str, Any]) -> None:
    response = client("events").put_events(Entries=[{
        "Source": SOURCE, "DetailType": detail_type, "EventBusName": bus,
        "Detail": json.dumps(detail, ensure_ascii=False),
    }])
    if response.get("FailedEntryCount"):
        raise RuntimeError(f"EventBridge rejected the event: {response['Entries']}")
