"""Stand-in for the Lambda SQS event source mapping.

It long-polls the build queue and hands each batch to the worker exactly as
Lambda would: the same event shape, a context whose remaining time counts down
from the function's timeout, and partial-batch semantics (``ReportBatchItemFailures``):
messages the handler finished are deleted, the ones it reports in
``batchItemFailures`` stay for redelivery, and nothing is deleted if it raises
(the queue's redrive policy then moves poison messages to the dead-letter queue).

Lambda runs invocations side by side, so one user's ten-million-row export
does not hold up everyone else's; the poller does the same with a few
threads, each receiving and handling its own batches like one concurrent
invocation.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chalice.local import LambdaContext

log = logging.getLogger("local.poller")

Handler = Callable[[dict[str, Any], Any], Any]

SQS_MAX_BATCH = 10


def lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS API message attributes in the Lambda event's camelCase spelling."""
    converted: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [
                base64.b64encode(v).decode("ascii") for v in value.get("BinaryListValues", [])
            ],
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        converted[name] = item
    return converted


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One ``ReceiveMessage`` message as a record of the Lambda SQS event."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def finished_message_ids(result: Any, message_ids: Sequence[str]) -> set[str]:
    """Which messages of the batch count as done, by Lambda's documented rules.

    Complete success: a null or empty response, or a null or empty
    ``batchItemFailures``. Complete failure: a response that is not an object,
    or any failure entry without a valid ``itemIdentifier`` of this batch.
    """
    everything = set(message_ids)
    if result is None:
        return everything
    if not isinstance(result, dict):
        raise ValueError(f"handler returned {type(result).__name__}, not an object")
    failures = result.get("batchItemFailures")
    if not failures:
        return everything
    if not isinstance(failures, list):
        raise ValueError("batchItemFailures is not a list")
    failed: set[str] = set()
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(identifier, str) or identifier not in everything:
            raise ValueError(f"batchItemFailures entry {entry!r} names no message of the batch")
        failed.add(identifier)
    return everything - failed


class SqsPoller:
    """Consumers of the build queue, like ``workers`` concurrent Lambda invocations."""

    def __init__(
        self,
        *,
        sqs_client: Any,
        handler: Handler,
        queue_url: str,
        queue_arn: str,
        region: str,
        function_name: str,
        timeout_seconds: int,
        memory_size: int,
        batch_size: int = 1,
        wait_seconds: int = 2,
        workers: int = 1,
        first_worker: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._sqs = sqs_client
        self._handler = handler
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._function_name = function_name
        self._timeout_seconds = timeout_seconds
        self._memory_size = memory_size
        self._batch_size = max(1, min(batch_size, SQS_MAX_BATCH))
        self._wait_seconds = wait_seconds
        self._stopping = threading.Event()
        # Daemon threads: a build still running at exit must not keep the process alive. Numbered
        # from ``first_worker``: a worker process's one consumer keeps its number across processes.
        self._threads = [
            threading.Thread(target=self._run, name=f"sqs-poller-{n}", daemon=True)
            for n in range(first_worker, first_worker + workers)
        ]
        self._count_lock = threading.Lock()
        self.batches = 0

    @property
    def workers(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        log.info(
            "polling %s with %d worker(s), batch size %d",
            self._queue_url,
            self.workers,
            self._batch_size,
        )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 15.0) -> bool:
        """Ask every worker to finish its current batch and stop; True if all did in time.

        ``timeout`` bounds the whole stop, not each worker, so shutting down
        does not take longer with more workers.
        """
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.warning("still busy after %.0f s: %s", timeout, ", ".join(busy))
        else:
            log.info("poller stopped")
        return not busy

    def _run(self) -> None:
        """One worker: receive a batch, handle it, repeat until asked to stop."""
        while not self._stopping.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=self._batch_size,
                    WaitTimeSeconds=self._wait_seconds,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # moto going away on shutdown, or a hiccup
                if self._stopping.is_set():
                    break
                log.warning("receive from the build queue failed: %s", exc)
                self._stopping.wait(1.0)
                continue
            messages = response.get("Messages") or []
            if not messages:
                continue
            if self._stopping.is_set():  # arrived during the last long poll: not ours to start
                self._release(messages)
                break
            try:
                self.dispatch(messages)
            except Exception:  # e.g. the delete failed: keep this worker, the pool stays whole
                log.exception("handling a batch failed; its messages return after the visibility timeout")

    def _release(self, messages: list[dict[str, Any]]) -> None:
        """Make messages received while stopping visible again at once (best effort)."""
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                   for i, m in enumerate(messages)]  # fmt: skip
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
        except Exception as exc:
            log.info("could not release %d message(s) while stopping: %s", len(messages), exc)

    def _context(self) -> LambdaContext:
        context = LambdaContext(
            function_name=self._function_name,
            memory_size=self._memory_size,
            max_runtime_ms=self._timeout_seconds * 1000,
        )
        context.invoked_function_arn = (
            f"arn:aws:lambda:{self._region}:123456789012:function:{self._function_name}"
        )
        return context

    def dispatch(self, messages: list[dict[str, Any]]) -> None:
        """Invoke the handler with one batch and delete what it finished."""
        with self._count_lock:
            self.batches += 1
        event = {"Records": [lambda_record(m, self._queue_arn, self._region) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        context = self._context()
        started = time.monotonic()
        worker = threading.current_thread().name
        log.info("%s: invoking %s with %d message(s)", worker, self._function_name, len(messages))
        try:
            result = self._handler(event, context)
        except Exception:
            log.exception(
                "%s: %s raised; all %d message(s) stay on the queue for redelivery",
                worker,
                self._function_name,
                len(messages),
            )
            return
        elapsed = time.monotonic() - started
        if elapsed > self._timeout_seconds:
            log.warning(
                "%s ran %.0f s, beyond its %d s timeout: Lambda would have killed it",
                self._function_name,
                elapsed,
                self._timeout_seconds,
            )
        try:
            done = finished_message_ids(result, ids)
        except ValueError as exc:
            log.error("invalid response from %s (%s): whole batch failed", self._function_name, exc)
            return
        self._delete_finished([m for m in messages if m["MessageId"] in done])
        log.info(
            "%s: %s finished %d, failed %d message(s) in %.2f s",
            worker,
            self._function_name,
            len(done),
            len(messages) - len(done),
            elapsed,
        )

    def _delete_finished(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_MAX_BATCH):
            chunk = messages[start : start + SQS_MAX_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
            for failure in response.get("Failed", []):
                log.warning("could not delete a finished message: %s", failure)
