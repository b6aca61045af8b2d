"""The JSON Scan reader against a scripted DynamoDB on 127.0.0.1: signing, retries, errors.

Each test's server answers from a script (status, headers, body), records what it was sent,
and repeats its last answer when the script runs out. Where the reader claims to do what a
boto3 client does (attempts, error codes), the same answers are given to a boto3 client too.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ChecksumError, ClientError, EndpointConnectionError

from chalicelib.adapters import aws
from chalicelib.adapters.dynamodb_scan import TARGET, DynamoDBScan, scan_request, scanner
from chalicelib.exporters.dynamodb_table import build_filter

PAGE = {"Items": [{"id": {"S": "a"}, "n": {"N": "1.5"}}], "Count": 1, "ScannedCount": 1,
        "LastEvaluatedKey": {"id": {"S": "a"}}}
Answer = tuple[int, dict[str, str], bytes]


def ok(body: dict[str, Any] = PAGE, crc: bool = True) -> Answer:
    data = json.dumps(body).encode()
    return 200, {"x-amz-crc32": str(zlib.crc32(data) if crc else zlib.crc32(data) + 1)}, data


def error(status: int, code: str, message: str = "no") -> Answer:
    return status, {"x-amzn-RequestId": "req-1"}, json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()


class Scripted(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[Answer] = []
        self.seen: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        script = self.server.script
        status, headers, data = script.pop(0) if len(script) > 1 else script[0]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Scripted]:
    httpd = Scripted()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client(url: str, **config: Any) -> Any:
    return botocore.session.get_session().create_client(
        "dynamodb", region_name="eu-west-1", endpoint_url=url, aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret", aws_session_token="token", config=Config(**config))


def credentials(token: str | None = "token") -> Any:
    from botocore.credentials import Credentials

    return Credentials("AKIDTEST", "secret", token)


def reader(url: str, sleeps: list[float] | None = None, **config: Any) -> DynamoDBScan:
    """A reader on ``url``; its backoff's waits go to ``sleeps`` (not waited), ``random()`` is 0.5."""
    return DynamoDBScan(client(url, **config), credentials(),
                        sleep=(sleeps if sleeps is not None else []).append, rand=lambda: 0.5)


def test_a_page_is_a_signed_scan_and_its_body_as_json(server):
    server.script = [ok()]
    request = {"TableName": "t", "Segment": 1, "TotalSegments": 4, "ExclusiveStartKey": {"id": {"S": "含"}}}
    assert reader(server.url).page(request) == PAGE
    ((headers, body),) = server.seen
    assert json.loads(body) == request
    assert headers["x-amz-target"] == TARGET == "DynamoDB_20120810.Scan"
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/eu-west-1/dynamodb/aws4_request" in headers["authorization"]
    assert "x-amz-target" in headers["authorization"].split("SignedHeaders=")[1]
    assert headers["x-amz-security-token"] == "token" and headers["amz-sdk-request"] == "attempt=1; max=4"


@pytest.mark.parametrize(("failure", "delay"), [
    (error(400, "ThrottlingException"), 0.5),  # throttling: rand() * 1 s
    (error(400, "ProvisionedThroughputExceededException"), 0.5),
    (error(400, "RequestLimitExceeded"), 0.5),
    (error(429, "SomethingNew"), 0.5),
    (error(500, "InternalServerError"), 0.0125),  # transient: rand() * 25 ms
    (error(503, "ServiceUnavailable"), 0.0125),
    ((502, {}, b"<html>bad gateway</html>"), 0.0125),
    (ok(crc=False), 0.0125),  # the body is not what DynamoDB's CRC32 says
])
def test_throttling_and_transient_failures_are_retried_with_backoff(server, failure, delay):
    server.script = [failure, ok()]
    sleeps: list[float] = []
    assert reader(server.url, sleeps).page({"TableName": "t"}) == PAGE
    assert [h["amz-sdk-request"] for h, _ in server.seen] == ["attempt=1; max=4", "attempt=2; max=4"]
    assert sleeps == [delay]
    assert server.seen[0][1] == server.seen[1][1]  # the same request, signed again


def test_backoff_grows_then_the_error_is_raised_after_the_attempts_a_boto3_client_makes(server, monkeypatch):
    server.script = [error(400, "ThrottlingException", "Rate exceeded")]
    sleeps: list[float] = []
    with pytest.raises(ClientError) as raised:
        reader(server.url, sleeps).page({"TableName": "t"})
    ours = len(server.seen)
    assert ours == 4 and sleeps == [0.5, 1.0, 2.0]
    assert raised.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 3
    assert raised.value.operation_name == "Scan"

    monkeypatch.setattr("time.sleep", lambda seconds: None)  # botocore's backoff, not waited for
    server.seen.clear()
    with pytest.raises(ClientError) as theirs:
        boto3.session.Session().client(
            "dynamodb", region_name="eu-west-1", endpoint_url=server.url, aws_access_key_id="AKIDTEST",
            aws_secret_access_key="secret").scan(TableName="t")
    assert len(server.seen) == ours
    assert theirs.value.response["Error"] == raised.value.response["Error"]


def test_the_clients_max_attempts_apply(server):
    server.script = [error(500, "InternalServerError")]
    scan = DynamoDBScan(client(server.url, retries={"total_max_attempts": 2, "mode": "standard"}),
                        credentials(None), sleep=lambda s: None)
    with pytest.raises(ClientError):
        scan.page({"TableName": "t"})
    assert len(server.seen) == 2 == scan.max_attempts


@pytest.mark.parametrize("failure", [
    error(400, "ValidationException", "One or more parameter values were invalid"),
    error(400, "ResourceNotFoundException", "Requested resource not found"),
    error(403, "AccessDeniedException", "not allowed"),
    (400, {}, b"not json"),
])
def test_other_errors_are_raised_at_once_as_a_boto3_client_raises_them(server, failure):
    server.script = [failure]
    with pytest.raises(ClientError) as ours:
        reader(server.url).page({"TableName": "t"})
    assert len(server.seen) == 1
    with pytest.raises(ClientError) as theirs:
        client(server.url).scan(TableName="t")
    assert ours.value.response["Error"] == theirs.value.response["Error"]
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == failure[0]


def test_a_body_that_never_matches_its_crc32_is_an_error(server):
    server.script = [ok(crc=False)]
    with pytest.raises(ChecksumError):
        reader(server.url).page({"TableName": "t"})
    assert len(server.seen) == 4


def test_a_connection_that_fails_is_retried_then_raised():
    with Scripted() as closed:
        url = closed.url  # a port nothing listens on once closed
    sleeps: list[float] = []
    with pytest.raises(EndpointConnectionError):
        reader(url, sleeps).page({"TableName": "t"})
    assert sleeps == [0.0125, 0.025, 0.05]


def test_a_before_send_handler_answers_instead_of_the_network(server):
    """What moto's in-process mock (and a test's stub) does for any botocore client."""
    scan = reader(server.url)
    sent: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request)
        return AWSResponse(request.url, 200, {}, _Raw(json.dumps(PAGE).encode()))

    scan._events.register("before-send.dynamodb.Scan", answer)
    assert scan.page({"TableName": "t"}) == PAGE
    assert server.seen == [] and json.loads(sent[0].body) == {"TableName": "t"}


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def test_the_request_is_the_one_boto3s_resource_sends(server):
    """Filters (a boto3 condition), projections and names, as ``Table.scan`` serializes them."""
    server.script = [ok({"Items": [], "Count": 0, "ScannedCount": 0})]
    kwargs = {"IndexName": "by-country", "Segment": 2, "TotalSegments": 3,
              "ProjectionExpression": "#c0, #c1", "ExpressionAttributeNames": {"#c0": "id", "#c1": "n"},
              "FilterExpression": build_filter([
                  {"attr": "n", "op": "between", "value": [1, 2.5]},
                  {"attr": "flag", "op": "eq", "value": True},
                  {"attr": "country", "op": "in", "value": ["CN", "FR"]},
                  {"attr": "name", "op": "begins_with", "value": "Zh"}])}
    session = boto3.session.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                                    region_name="eu-west-1")
    session.resource("dynamodb", endpoint_url=server.url).Table("t").scan(**kwargs)
    ((_, resource_body),) = server.seen
    assert scan_request("t", kwargs) == json.loads(resource_body)


def test_the_process_reader_follows_the_shared_clients(server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    aws.reset()
    try:
        first = scanner()
        assert scanner() is first and first.url == server.url + "/"
        server.script = [ok()]
        assert first.page({"TableName": "t"}) == PAGE  # the test environment's credentials
        assert "Credential=testing/" in server.seen[0][0]["authorization"]
        aws.reset()
        assert scanner() is not first
    finally:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        aws.reset()
