"""The local stack's Lambda stand-ins, without a running stack.

The poller must treat the worker's answer exactly as the SQS event source
mapping does with ReportBatchItemFailures, or the local stack would hide
(or invent) redelivery bugs.
"""

from __future__ import annotations

from typing import Any

import pytest

from local.gateway import token_from_header
from local.poller import SqsPoller, finished_message_ids, lambda_record

LAMBDA_RECORD_KEYS = {
    "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
    "eventSource", "eventSourceARN", "awsRegion",
}  # fmt: skip
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:builds"


def message(n: int) -> dict[str, Any]:
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"rh{n}",
        "Body": '{"type": "download.build", "version": 1, "task_id": "t"}',
        "MD5OfBody": "0" * 32,
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "MessageAttributes": {
            "trace": {"StringValue": "abc", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }


class FakeSqs:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict:  # noqa: N803
        assert len(Entries) <= 10
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def poller(handler: Any, sqs: FakeSqs) -> SqsPoller:
    return SqsPoller(
        sqs_client=sqs, handler=handler, queue_url="http://q", queue_arn=QUEUE_ARN,
        region="us-east-1", function_name="download-center-dev-build_worker",
        timeout_seconds=900, memory_size=1024, batch_size=10,
    )  # fmt: skip


def test_record_has_the_lambda_shape() -> None:
    record = lambda_record(message(1), QUEUE_ARN, "us-east-1")
    assert set(record) == LAMBDA_RECORD_KEYS
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["trace"] == {
        "stringValue": "abc", "stringListValues": [], "binaryListValues": [], "dataType": "String",
    }  # fmt: skip
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="


@pytest.mark.parametrize(
    ("result", "done"),
    [
        (None, {"a", "b"}),
        ({}, {"a", "b"}),
        ({"batchItemFailures": None}, {"a", "b"}),
        ({"batchItemFailures": []}, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"a"}),
    ],
)
def test_finished_ids(result: Any, done: set[str]) -> None:
    assert finished_message_ids(result, ["a", "b"]) == done


@pytest.mark.parametrize(
    "result",
    [
        [],
        "ok",
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemId": "a"}]},
        {"batchItemFailures": [{"itemIdentifier": "zzz"}]},
    ],
)
def test_invalid_responses_fail_the_whole_batch(result: Any) -> None:
    with pytest.raises(ValueError):
        finished_message_ids(result, ["a", "b"])


def test_dispatch_deletes_only_what_the_handler_finished() -> None:
    seen: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context))
        return {"batchItemFailures": [{"itemIdentifier": "m3"}]}

    sqs = FakeSqs()
    poller(handler, sqs).dispatch([message(n) for n in range(12)])
    assert sorted(sqs.deleted) == sorted(f"rh{n}" for n in range(12) if n != 3)
    event, context = seen[0]
    assert [r["messageId"] for r in event["Records"]] == [f"m{n}" for n in range(12)]
    assert 890_000 < context.get_remaining_time_in_millis() <= 900_000
    assert context.function_name == "download-center-dev-build_worker"
    assert context.aws_request_id


@pytest.mark.parametrize(
    "handler_result",
    [RuntimeError("boom"), {"batchItemFailures": [{"itemIdentifier": "nope"}]}],
)
def test_dispatch_deletes_nothing_when_the_batch_fails(handler_result: Any) -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        if isinstance(handler_result, Exception):
            raise handler_result
        return handler_result

    sqs = FakeSqs()
    poller(handler, sqs).dispatch([message(1), message(2)])
    assert sqs.deleted == []


@pytest.mark.parametrize(
    ("header", "token"),
    [("abc.def.ghi", "abc.def.ghi"), ("Bearer abc.def.ghi", "abc.def.ghi"),
     ("bearer  abc.def.ghi ", "abc.def.ghi"), ("Bearer", "Bearer")],
)  # fmt: skip
def test_token_from_header(header: str, token: str) -> None:
    assert token_from_header(header) == token
