"""Rows from a DynamoDB table or index on the deployment's allow-list.

Reads page by page (Scan with a filter expression), so memory holds one page
at most, whatever the table's size.
"""

from __future__ import annotations

import base64
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from chalicelib.config import Settings
from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters.base import BuildContext, RowExporter
from chalicelib.formats.base import Row
from chalicelib.schema_issues import choices

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "begins_with", "contains", "between", "in")
_SCALAR = {"type": ["string", "number", "boolean"]}
#: DynamoDB's characters for table and index names, as the pattern and in words
_NAME = {"type": "string", "minLength": 3, "maxLength": 255, "pattern": "^[a-zA-Z0-9_.-]+$",
         "x-pattern-issue": "may contain only ASCII letters, digits, underscores (_), dots (.) "
                            "and hyphens (-)"}
#: What ``value`` each op takes; the filter's schema checks it (an if/then per op).
_VALUE_FOR_OP = {
    "between": {"type": "array", "minItems": 2, "maxItems": 2,
                "x-issue": "must be a list of two values, [low, high], for op between"},
    "in": {"type": "array", "minItems": 1,
           "x-issue": "must be a non-empty list of values for op in"},
} | {op: {**_SCALAR, "x-issue": f"must be one value (a string, a number or a boolean), not a list, "
                                   f"for op {op}"}
     for op in OPS if op not in ("between", "in")}
#: Without ``columns``, the csv header is the union of the keys of this many
#: leading items (jsonl always writes every attribute).
SAMPLE_ITEMS = 200


def _plain(value: Any) -> Any:
    """DynamoDB types to JSON-friendly Python."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=str)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3 Binary
        return base64.b64encode(value.value).decode("ascii")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    return value


def build_filter(filters: list[dict[str, Any]]) -> Any:
    """Turn the contract's filters into a boto3 condition (ANDed)."""
    from boto3.dynamodb.conditions import Attr

    condition = None
    for f in filters:
        attr, op, value = Attr(f["attr"]), f["op"], f.get("value")
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ExportError("invalid_filter", f"Filter on {f['attr']!r}: 'between' takes [low, high].")
            cond = attr.between(_number(value[0]), _number(value[1]))
        elif op == "in":
            if not isinstance(value, list) or not value:
                raise ExportError("invalid_filter", f"Filter on {f['attr']!r}: 'in' takes a non-empty list.")
            cond = attr.is_in([_number(v) for v in value])
        else:
            if isinstance(value, list):
                raise ExportError("invalid_filter", f"Filter on {f['attr']!r}: {op!r} takes one value.")
            cond = getattr(attr, op)(_number(value))
        condition = cond if condition is None else condition & cond
    return condition


class DynamoDBTableExporter(RowExporter):
    kind = "dynamodb_table"
    title = "DynamoDB table or index"
    source_param = "table"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["table"],
        "properties": {
            "table": _NAME,
            "index": _NAME,
            "segments": {"type": "integer", "minimum": 1, "maximum": 16,
                         "description": "parallel scan segments (default SCAN_SEGMENTS)"},
            "columns": {"type": "array", "minItems": 1, "maxItems": 200, "uniqueItems": True,
                        "items": {"type": "string", "minLength": 1, "maxLength": 255}},
            "filters": {
                "type": "array",
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["attr", "op", "value"],
                    "properties": {
                        "attr": {"type": "string", "minLength": 1, "maxLength": 255},
                        "op": {"enum": list(OPS)},
                        "value": {"type": [*_SCALAR["type"], "array"], "items": _SCALAR,
                                  "maxItems": 100},
                    },
                    "allOf": [{"if": {"properties": {"op": {"const": op}}, "required": ["op"]},
                               "then": {"properties": {"value": value}}}
                              for op, value in _VALUE_FOR_OP.items()],
                },
            },
        },
    }

    def deployment_sources(self, settings: Settings) -> tuple[str, ...]:
        return settings.exportable_tables

    def examples(self, sources: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
        """The first table the caller may read, whole: any table's columns are unknown here."""
        return [{"table": sources[0]}] if sources else []

    def preflight(self, params: dict[str, Any], settings: Settings) -> None:
        """One DescribeTable: the table exists, and the index is one of its own."""
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        name = params["table"]
        try:
            table = client("dynamodb", probe=True).describe_table(TableName=name)["Table"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise ValidationError.of([{"field": "params.table",
                                       "issue": "names a table that does not exist"}],
                                     "table_not_found") from None
        index = params.get("index")
        indexes = sorted(i["IndexName"] for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes")
                         for i in table.get(key, []))
        if index and index not in indexes:
            issue = (f"must be an index of table {name}: {choices(indexes)}" if indexes
                     else f"must be left out: table {name} has no index")
            raise ValidationError.of([{"field": "params.index", "issue": issue}], "index_not_found")

    def open(self, params: dict[str, Any], ctx: BuildContext) -> tuple[Sequence[str], Iterator[Row]]:
        table_name = params["table"]
        if table_name not in ctx.settings.exportable_tables:
            raise ExportError("table_not_allowed",
                              f"Table {table_name!r} is not on this deployment's export allow-list.")
        scan_kwargs: dict[str, Any] = {}
        if params.get("index"):
            scan_kwargs["IndexName"] = params["index"]
        if params.get("filters"):
            scan_kwargs["FilterExpression"] = build_filter(params["filters"])
        columns = list(params.get("columns") or [])
        if columns:
            names = {f"#c{i}": c for i, c in enumerate(columns)}
            scan_kwargs["ProjectionExpression"] = ", ".join(names)
            scan_kwargs["ExpressionAttributeNames"] = names
        segments = int(params.get("segments") or ctx.settings.scan_segments)
        pages = self._pages(table_name, scan_kwargs, segments)
        first: list[dict[str, Any]] = []
        for page in pages:  # a filtered scan can return empty pages before the first match
            ctx.check()
            if page:
                first = page
                break
        if not columns:
            seen: dict[str, None] = {}
            for item in first[:SAMPLE_ITEMS]:
                seen.update(dict.fromkeys(item))
            columns = sorted(seen)
        return columns, self._rows(first, pages, ctx)

    @staticmethod
    def _rows(
        first: list[dict[str, Any]], pages: Iterator[list[dict[str, Any]]], ctx: BuildContext
    ) -> Iterator[Row]:
        for item in first:
            yield _plain(item)
        for page in pages:
            ctx.check()  # a selective filter reads many empty pages without yielding a byte
            for item in page:
                yield _plain(item)

    def _pages(
        self, table_name: str, scan_kwargs: dict[str, Any], segments: int
    ) -> Iterator[list[dict[str, Any]]]:
        if segments <= 1:
            return _segment_pages(table_name, scan_kwargs, shared_client=True)
        sources = [
            partial(_segment_pages, table_name,
                    {**scan_kwargs, "Segment": i, "TotalSegments": segments}, False)
            for i in range(segments)
        ]
        return parallel_pages(sources)


def _segment_pages(
    table_name: str, scan_kwargs: dict[str, Any], shared_client: bool
) -> Iterator[list[dict[str, Any]]]:
    """One scan segment, page by page (at most 1 MB of items a page)."""
    import boto3
    from botocore.exceptions import ClientError

    from chalicelib.adapters.aws import resource

    # boto3 resources are not thread-safe: each segment thread gets its own
    dynamodb = resource("dynamodb") if shared_client else boto3.session.Session().resource(
        "dynamodb", region_name=resource("dynamodb").meta.client.meta.region_name)
    table = dynamodb.Table(table_name)
    kwargs = dict(scan_kwargs)
    while True:
        try:
            page = table.scan(**kwargs)
        except ClientError as exc:
            raise _source_error(exc, table_name, kwargs.get("IndexName")) from exc
        yield page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _source_error(exc: Any, table_name: str, index: str | None) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    message = exc.response.get("Error", {}).get("Message", "")
    if code == "ResourceNotFoundException":
        return ExportError("table_not_found", f"Table or index {table_name!r} does not exist.")
    if code == "ValidationException" and "index" in message.lower():
        return ExportError("index_not_found", f"Index {index!r} does not exist on {table_name!r}.")
    if code == "ValidationException":
        return ExportError("invalid_filter", f"DynamoDB rejected the query: {message}")
    return exc


def parallel_pages(
    sources: Sequence[Callable[[], Iterator[list[dict[str, Any]]]]], per_source: int = 2
) -> Iterator[list[dict[str, Any]]]:
    """Pages from several scan segments at once, in arrival order.

    The hand-over queue holds at most ``per_source`` pages per segment, so
    memory stays bounded however large the table; closing the generator (a
    cancel, an error downstream) stops every segment thread.
    """
    handover: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=per_source * len(sources))
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(source: Callable[[], Iterator[list[dict[str, Any]]]]) -> None:
        try:
            for page in source():
                if not put(("page", page)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    threads = [threading.Thread(target=run, args=(src,), daemon=True) for src in sources]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            kind, value = handover.get()
            if kind == "page":
                yield value
            elif kind == "done":
                running -= 1
            else:
                raise value
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
