"""DynamoDB Scan pages as DynamoDB's own typed JSON, for exports: no SDK parse of the items.

Why this exists: botocore parses a Scan response by walking the output
shape and rebuilding every attribute value, and boto3's resource then walks
it again to deserialize each value; for an export that is most of the CPU an
item costs (docs/benchmarks.md section 7). An export only needs the items as
DynamoDB sends them (``{"S": "..."}``, ``{"N": "12.5"}``, ...), which it turns
into row values in one pass (``chalicelib.exporters.dynamodb_table.plain_item``).

So ``DynamoDBScan`` sends the Scan request itself, on botocore's public pieces,
and reads the body with the standard library's ``json``:

- the endpoint, region, timeouts, proxies and pool size are those of a botocore
  client made the usual way (``client.meta``), so ``AWS_ENDPOINT_URL`` (the moto
  server locally), ``AWS_REGION`` and the config files apply as to any client;
- the request is an ``AWSRequest`` signed with ``SigV4Auth`` with the credentials
  of the session that client came from (refreshed as the client's would be);
- before sending, it emits the client's documented ``before-send`` event: a
  handler that answers a botocore request there (moto's in-process ``mock_aws``,
  a test's stub) answers this one; otherwise botocore's ``URLLib3Session`` sends it;
- throttling and transient failures are retried as botocore's ``standard`` retry
  mode retries them (``RETRY_RULES``); any other error is raised as botocore's
  ``ClientError`` with the code and message botocore's parser would give, so
  callers handle errors as they did with a client.

Not here, on purpose: pagination and what the items become (the exporter's);
botocore's retry quota (a token bucket shared by a client's calls, which only
matters for many concurrent callers; a build's scan is a few threads, each
bounded by the attempts); endpoint discovery and account-ID endpoints (the
regional endpoint serves every account).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: The Scan operation in DynamoDB's JSON 1.0 protocol.
TARGET = "DynamoDB_20120810.Scan"
CONTENT_TYPE = "application/x-amz-json-1.0"
#: The event botocore emits for a Scan right before sending it (botocore's "Botocore Events").
BEFORE_SEND = "before-send.dynamodb.Scan"
#: Connections to keep open: one per scan thread (a build uses at most 16 segments).
POOL_CONNECTIONS = 16


@dataclass(frozen=True)
class RetryRules:
    """botocore's ``standard`` retry mode for DynamoDB, as botocore 1.44 applies it.

    A request is retried, up to ``max_attempts`` attempts in all, when the
    connection fails, when the status is 500, 502, 503 or 504, when the error
    code is a transient or throttling one, when the status is 429, or when the
    body's CRC32 differs from DynamoDB's ``x-amz-crc32`` header. Attempt ``i``
    (1-based) waits ``random() * min(scale * 2 ** (i - 1), 20)`` seconds
    before the next, ``scale`` being 1 s for throttling and 25 ms otherwise,
    raised to an ``x-amz-retry-after`` header (milliseconds, at most 5 s more).
    tests/unit/test_dynamodb_scan.py checks the attempts against a boto3
    client's on the same answers.
    """

    #: attempts in all when the client's config does not say (AWS_MAX_ATTEMPTS, max_attempts)
    max_attempts: int = 4
    throttling_codes: frozenset[str] = frozenset({
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
        "TooManyRequestsException", "ProvisionedThroughputExceededException",
        "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
        "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
        "EC2ThrottledException"})
    transient_codes: frozenset[str] = frozenset({
        "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
    transient_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    throttling_statuses: frozenset[int] = frozenset({429})
    throttling_scale: float = 1.0
    transient_scale: float = 0.025
    max_backoff: float = 20.0
    retry_after_extra: float = 5.0

    def delay(self, attempt: int, throttled: bool, retry_after_ms: str | None,
              rand: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        scale = self.throttling_scale if throttled else self.transient_scale
        wait = rand() * min(scale * 2 ** (attempt - 1), self.max_backoff)
        try:
            after = int(retry_after_ms) / 1000 if retry_after_ms is not None else None
        except ValueError:
            after = None
        if after is not None and after >= 0:
            wait = max(wait, min(after, wait + self.retry_after_extra))
        return wait


RETRY_RULES = RetryRules()


def _json_default(value: Any) -> Any:
    """Binary key values (bytes or boto3's ``Binary``) as DynamoDB's JSON has them: base64 text."""
    raw = getattr(value, "value", value)
    if isinstance(raw, (bytes, bytearray)):
        return base64.b64encode(raw).decode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} in a Scan request")


def scan_request(table_name: str, scan_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The Scan request body for ``Table.scan``-style arguments, as boto3's resource would send it.

    ``FilterExpression`` may be a boto3 condition (``boto3.dynamodb.conditions``):
    it is built into an expression with placeholders by ``ConditionExpressionBuilder``
    and its values serialized by ``TypeSerializer``, as the resource does;
    other arguments (``ExclusiveStartKey`` included) must already be in
    DynamoDB's JSON form.
    """
    request: dict[str, Any] = {"TableName": table_name, **scan_kwargs}
    condition = request.get("FilterExpression")
    if condition is not None and not isinstance(condition, str):
        from boto3.dynamodb.conditions import ConditionExpressionBuilder
        from boto3.dynamodb.types import TypeSerializer

        built = ConditionExpressionBuilder().build_expression(condition)
        serialize = TypeSerializer().serialize
        request["FilterExpression"] = built.condition_expression
        request["ExpressionAttributeNames"] = {**request.get("ExpressionAttributeNames", {}),
                                               **built.attribute_name_placeholders}
        values = {k: serialize(v) for k, v in built.attribute_value_placeholders.items()}
        request["ExpressionAttributeValues"] = {**request.get("ExpressionAttributeValues", {}), **values}
    return request


class DynamoDBScan:
    """Scan calls answered with DynamoDB's JSON as it is: one ``page`` a request. Thread-safe."""

    def __init__(self, client: Any, credentials: Any, *, verify: bool | str = True,
                 http: Any = None, rules: RetryRules = RETRY_RULES,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        """``client``: a botocore DynamoDB client, for its endpoint, region, config and events;
        ``credentials``: botocore credentials of its session; ``http``: anything with
        ``send(AWSPreparedRequest) -> AWSResponse`` (default: a ``URLLib3Session`` on the
        client's settings); ``sleep`` and ``rand``: the backoff's, for tests."""
        from botocore.httpsession import URLLib3Session

        meta = client.meta
        config = meta.config
        self.url = meta.endpoint_url.rstrip("/") + "/"
        self.region = meta.region_name
        self._events = meta.events
        self._credentials = credentials
        self._rules = rules
        self.max_attempts = int((config.retries or {}).get("total_max_attempts") or rules.max_attempts)
        self._http = http or URLLib3Session(
            verify=verify, proxies=config.proxies, proxies_config=config.proxies_config,
            timeout=(config.connect_timeout, config.read_timeout), client_cert=config.client_cert,
            max_pool_connections=max(config.max_pool_connections, POOL_CONNECTIONS))
        self._sleep, self._rand = sleep, rand
        import botocore

        self._user_agent = f"download-center/dynamodb-scan Botocore/{botocore.__version__}"

    def page(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One Scan call: its response body, parsed by ``json`` (``Items`` as typed JSON).

        Retried as ``RetryRules`` says; raises botocore's ``ClientError`` for an
        error response, botocore's connection errors once the attempts are spent.
        """
        from botocore.exceptions import ChecksumError, ClientError, ConnectionError, HTTPClientError

        body = json.dumps(request, separators=(",", ":"), ensure_ascii=False,
                          default=_json_default).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._send(body, attempt)
            except (ConnectionError, HTTPClientError):
                if attempt >= self.max_attempts:
                    raise
                self._sleep(self._rules.delay(attempt, False, None, self._rand))
                continue
            status, headers, content = response.status_code, response.headers, response.content
            crc = headers.get("x-amz-crc32")
            crc_ok = crc is None or zlib.crc32(content) & 0xFFFFFFFF == int(crc)
            if status < 300 and crc_ok:
                return json.loads(content.decode("utf-8")) if content else {}
            error = None if status < 300 else _error(status, headers, content)
            code = error["Error"]["Code"] if error else None
            throttled = code in self._rules.throttling_codes or status in self._rules.throttling_statuses
            retryable = (throttled or not crc_ok or code in self._rules.transient_codes
                         or status in self._rules.transient_statuses)
            if retryable and attempt < self.max_attempts:
                self._sleep(self._rules.delay(attempt, throttled, headers.get("x-amz-retry-after"),
                                              self._rand))
                continue
            if error is None:
                raise ChecksumError(checksum_type="crc32", expected_checksum=crc,
                                    actual_checksum=zlib.crc32(content) & 0xFFFFFFFF)
            error["ResponseMetadata"]["RetryAttempts"] = attempt - 1
            raise ClientError(error, "Scan")

    def _send(self, body: bytes, attempt: int) -> Any:
        """Sign and send one attempt: a ``before-send`` handler's answer, or the HTTP session's."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import NoCredentialsError

        if self._credentials is None:
            raise NoCredentialsError()
        request = AWSRequest(method="POST", url=self.url, data=body, headers={
            "Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET, "User-Agent": self._user_agent,
            "amz-sdk-request": f"attempt={attempt}; max={self.max_attempts}"})
        SigV4Auth(self._credentials.get_frozen_credentials(), "dynamodb", self.region).add_auth(request)
        prepared = request.prepare()
        for _, answer in self._events.emit(BEFORE_SEND, request=prepared):
            if answer is not None:
                return answer
        return self._http.send(prepared)


def _error(status: int, headers: Mapping[str, str], content: bytes) -> dict[str, Any]:
    """An error response as botocore's JSON parser gives it: ``Error.Code``, ``Error.Message``."""
    text = content.decode("utf-8", "replace") if content else ""
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {"message": text}
    if not isinstance(body, dict):
        body = {"message": text}
    code = str(body.get("__type") or headers.get("x-amzn-errortype") or status)
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    metadata: dict[str, Any] = {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)}
    if "x-amzn-requestid" in headers:
        metadata["RequestId"] = headers["x-amzn-requestid"]
    return {"Error": {"Code": code, "Message": body.get("message", body.get("Message", ""))},
            "ResponseMetadata": metadata}


_lock = threading.Lock()
_made: tuple[Any, DynamoDBScan] | None = None


def scanner() -> DynamoDBScan:
    """The process's ``DynamoDBScan``: a botocore session and client of its own, made once.

    Made again after ``chalicelib.adapters.aws.reset()`` (tests switch
    endpoints and credentials): it follows the shared DynamoDB client's lifetime.
    """
    global _made
    from chalicelib.adapters import aws

    shared = aws.client("dynamodb")
    with _lock:
        if _made is None or _made[0] is not shared:
            import botocore.session

            session = botocore.session.get_session()
            client = session.create_client("dynamodb", region_name=aws.region_name())
            _made = (shared, DynamoDBScan(client, session.get_credentials(),
                                          verify=session.get_config_variable("ca_bundle") or True))
        return _made[1]
