"""The local stack's Lambda stand-ins, without a running stack.

The poller must treat the worker's answer exactly as the SQS event source
mapping does with ReportBatchItemFailures, or the local stack would hide
(or invent) redelivery bugs; and, like Lambda, it must run builds side by
side, so a long one does not hold up the rest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from app import JSON
from chalicelib.webconsole import SECURITY_HEADERS
from local.gateway import (
    MISSING_ROUTE,
    gateway_responses,
    render_gateway_response,
    token_from_header,
    utf8_request_target,
)
from local.poller import SqsPoller, finished_message_ids, lambda_record
from local.stack import StartupError, _positive_int

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


@pytest.fixture
def build_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """An SQS queue in in-process moto, and a client for it."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="builds", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        yield sqs, url


def queue_pool(sqs: Any, url: str, handler: Any, workers: int) -> SqsPoller:
    return SqsPoller(
        sqs_client=sqs, handler=handler, queue_url=url, queue_arn=QUEUE_ARN, region="us-east-1",
        function_name="download-center-dev-build_worker", timeout_seconds=900, memory_size=1024,
        batch_size=1, wait_seconds=1, workers=workers,
    )  # fmt: skip


def messages_left(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages (moto's counts are exact)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_workers_run_batches_side_by_side(build_queue: tuple[Any, str]) -> None:
    """Two batches in flight at once, each with its own Lambda context, both deleted when done."""
    sqs, url = build_queue
    together = threading.Barrier(2, timeout=10)  # breaks unless both invocations overlap
    contexts: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        contexts.append(context)
        together.wait()

    for n in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=f"build {n}")
    pool = queue_pool(sqs, url, handler, workers=2)
    pool.start()
    try:
        wait_until(lambda: messages_left(sqs, url) == 0)
    finally:
        assert pool.stop(timeout=10)
    assert pool.batches == 2
    assert len({c.aws_request_id for c in contexts}) == 2
    assert all(c.get_remaining_time_in_millis() > 890_000 for c in contexts)


def test_stop_finishes_current_batches_and_takes_no_new_ones(build_queue: tuple[Any, str]) -> None:
    sqs, url = build_queue
    release = threading.Event()
    running: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        running.append(event["Records"][0]["body"])
        release.wait(10)

    for n in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=f"build {n}")
    pool = queue_pool(sqs, url, handler, workers=2)
    pool.start()
    try:
        wait_until(lambda: len(running) == 2)
        assert pool.stop(timeout=0.2) is False  # both still busy: stop says so in time
        sqs.send_message(QueueUrl=url, MessageBody="after stop")
    finally:
        release.set()
    assert pool.stop(timeout=10) is True
    assert sorted(running) == ["build 0", "build 1"]
    assert pool.batches == 2
    assert messages_left(sqs, url) == 1  # the finished two were deleted, the new one left alone


class LatePollSqs(FakeSqs):
    """A long poll that returns a message only once stop() has been asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.polling = threading.Event()
        self.answer = threading.Event()
        self.released: list[str] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.polling.set()
        self.answer.wait(5)
        return {"Messages": [message(1)]}

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict:  # noqa: N803
        assert all(e["VisibilityTimeout"] == 0 for e in Entries)
        self.released += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def test_a_batch_received_while_stopping_is_released_not_run() -> None:
    sqs = LatePollSqs()
    calls: list[Any] = []
    pool = queue_pool(sqs, "http://q", lambda event, context: calls.append(event), workers=1)
    pool.start()
    assert sqs.polling.wait(5)
    threading.Timer(0.1, sqs.answer.set).start()  # the poll returns after stop() was called
    assert pool.stop(timeout=5)
    assert calls == []
    assert sqs.released == ["rh1"]
    assert sqs.deleted == []


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        queue_pool(FakeSqs(), "http://q", lambda e, c: None, workers=0)


@pytest.mark.parametrize(("raw", "value"), [(None, 2), ("1", 1), (" 8 ", 8)])
def test_local_workers_setting(monkeypatch: pytest.MonkeyPatch, raw: str | None, value: int) -> None:
    if raw is None:
        monkeypatch.delenv("LOCAL_WORKERS", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORKERS", raw)
    assert _positive_int("LOCAL_WORKERS", 2) == value


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", ""])
def test_bad_local_workers_is_a_startup_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LOCAL_WORKERS", raw)
    with pytest.raises(StartupError, match="LOCAL_WORKERS"):
        _positive_int("LOCAL_WORKERS", 2)


def gateway_template(responses: dict[str, Any]) -> dict[str, Any]:
    return {"Resources": {"RestAPI": {"Properties": {"GatewayResponses": responses}}}}


def test_the_missing_route_response_comes_from_the_deployment_template() -> None:
    response = gateway_responses().render(MISSING_ROUTE)
    assert response.status == 404
    # the app's own error responses' headers (but the CSP: see test_infra's gateway headers test)
    assert response.headers == JSON | {name: value for name, value in SECURITY_HEADERS.items()
                                       if name != "Content-Security-Policy"}
    assert json.loads(response.body) == {
        "error": {"code": "not_found", "message": "No route matches this method and path."}
    }


def test_gateway_response_renders_the_message_and_static_headers() -> None:
    template = gateway_template({
        "MISSING_AUTHENTICATION_TOKEN": {
            "StatusCode": "404",
            "ResponseTemplates": {"application/json": '{"error": {"message": $context.error.messageString}}'},
            "ResponseParameters": {"Headers": {"Cache-Control": "'no-store'"}},
        }
    })  # fmt: skip
    response = render_gateway_response(template, "MISSING_AUTHENTICATION_TOKEN", 403, 'Say "hi"')
    assert response.status == 404
    assert json.loads(response.body) == {"error": {"message": 'Say "hi"'}}
    assert response.headers["Cache-Control"] == "no-store"


def test_gateway_response_falls_back_as_api_gateway_does() -> None:
    default_4xx = {"ResponseTemplates": {"application/json": '{"oops": $context.error.messageString}'}}
    response = render_gateway_response(gateway_template({"DEFAULT_4XX": default_4xx}), "X", 403, "m")
    assert (response.status, json.loads(response.body)) == (403, {"oops": "m"})
    response = render_gateway_response(gateway_template({}), "X", 403, "m")
    assert (response.status, json.loads(response.body)) == (403, {"message": "m"})


@pytest.mark.parametrize(
    "spec",
    [
        {"ResponseTemplates": {"application/json": '{"id": "$context.requestId"}'}},
        {"ResponseParameters": {"Headers": {"X-Id": "method.request.header.X-Id"}}},
        # CloudFormation's own AWS::ApiGateway::GatewayResponse form, which SAM's Api refuses
        {"ResponseParameters": {"gatewayresponse.header.X-Id": "'x'"}},
        {"ResponseTemplates": {"application/json": "not json"}},
    ],
)
def test_gateway_response_the_local_stack_cannot_mirror_fails_loudly(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render_gateway_response(gateway_template({"X": spec}), "X", 403, "m")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # http.server hands the request line over decoded as Latin-1
        ("/downloads?task_name=用户".encode().decode("latin-1"), "/downloads?task_name=%E7%94%A8%E6%88%B7"),
        ("/downloads?task_name=%E7%94%A8%E6%88%B7&l=5", "/downloads?task_name=%E7%94%A8%E6%88%B7&l=5"),
        ("/downloads?task_name=a+b&x=%2B~!*'()", "/downloads?task_name=a+b&x=%2B~!*'()"),
    ],
)
def test_a_raw_utf8_request_target_reads_as_its_percent_encoded_form(target: str, expected: str) -> None:
    assert utf8_request_target(target) == expected


def test_a_stopping_stack_leaves_a_newer_stacks_file(tmp_path: Any) -> None:
    """Two stacks on one STACK_FILE, the first stopping as the second comes up: the file the
    second wrote is its readiness signal (and holds its passwords): the first must not take it."""
    from local.stackfile import read_stack_file, remove_stack_file, write_stack_file

    path = tmp_path / "stack.json"
    first, second = {"api_url": "http://127.0.0.1:8001"}, {"api_url": "http://127.0.0.1:8002"}
    write_stack_file(path, first)
    write_stack_file(path, second)  # the new stack is up
    assert remove_stack_file(path, first) is False
    assert read_stack_file(path) == second
    assert remove_stack_file(path, second) is True
    assert not path.exists()
    assert remove_stack_file(path, second) is False  # already gone: nothing to do
