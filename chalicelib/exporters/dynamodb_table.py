"""Rows from a DynamoDB table or index on the deployment's allow-list.

Reads page by page (Scan with a filter expression), so memory holds one page
at most, whatever the table's size.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from chalicelib.errors import ExportError
from chalicelib.exporters.base import BuildContext, RowExporter
from chalicelib.formats.base import Row

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "begins_with", "contains", "between", "in")
_SCALAR = {"type": ["string", "number", "boolean"]}
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
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["table"],
        "properties": {
            "table": {"type": "string", "minLength": 3, "maxLength": 255,
                      "pattern": "^[a-zA-Z0-9_.-]+$"},
            "index": {"type": "string", "minLength": 3, "maxLength": 255,
                      "pattern": "^[a-zA-Z0-9_.-]+$"},
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
                        "value": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR,
                                                      "maxItems": 100}]},
                    },
                },
            },
        },
    }

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
        pages = self._pages(table_name, scan_kwargs)
        first = next(pages, [])
        if not columns:
            seen: dict[str, None] = {}
            for item in first[:SAMPLE_ITEMS]:
                seen.update(dict.fromkeys(item))
            columns = sorted(seen)
        return columns, self._rows(first, pages)

    @staticmethod
    def _rows(first: list[dict[str, Any]], pages: Iterator[list[dict[str, Any]]]) -> Iterator[Row]:
        for item in first:
            yield _plain(item)
        for page in pages:
            for item in page:
                yield _plain(item)

    def _pages(self, table_name: str, scan_kwargs: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import resource

        table = resource("dynamodb").Table(table_name)
        kwargs = dict(scan_kwargs)
        while True:
            try:
                page = table.scan(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                message = exc.response.get("Error", {}).get("Message", "")
                if code == "ResourceNotFoundException":
                    raise ExportError("table_not_found",
                                      f"Table or index {table_name!r} does not exist.") from exc
                if code == "ValidationException" and "index" in message.lower():
                    index = kwargs.get("IndexName")
                    raise ExportError("index_not_found",
                                      f"Index {index!r} does not exist on {table_name!r}.") from exc
                if code == "ValidationException":
                    raise ExportError("invalid_filter", f"DynamoDB rejected the query: {message}") from exc
                raise
            yield page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
