"""Rows from a DynamoDB table or index on the deployment's allow-list.

Reads page by page (Scan with a filter expression, in parallel segments
written in segment order), so memory holds a few pages a segment at most,
whatever the table's size, and the same data gives the same file.
"""

from __future__ import annotations

import base64
import difflib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from itertools import chain
from typing import Any

from chalicelib.config import Settings
from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters.base import BuildContext, RowExporter
from chalicelib.formats.base import Row
from chalicelib.schema_issues import choices
from chalicelib.segments import Plan, Segment

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

log = logging.getLogger(__name__)

#: Without ``columns`` (and ``all_columns``), the columns are the key attributes, then
#: the other attribute names of this many leading items (segment order: the same
#: table gives the same columns) in code-point order.
SAMPLE_ITEMS = 200
#: Names a warning lists at most (and a segment keeps for the finalizer).
LISTED_NAMES = 10

# -- segmented builds (``plan``): what one invocation is guessed to do, and what the plan may read --
#: Rows a second one worker is guessed to write, per format. docs/benchmarks.md §7 measured the
#: worker's whole csv path (botocore's parse of the pages, the conversion, the encoder) at about
#: 13,300 rows/s on its machine with no server to wait for (45,000 rows/s is the path from pages
#: already parsed); xlsx's path was 25% slower there. Rounded down for the server's wait and wider items.
#: Those were the typed reader's figures: the JSON reader (issue 18, §7) is faster, so these now guess
#: low (more segments than needed); left as they are until the segment planner is retuned.
ROWS_PER_SECOND = {"csv": 10_000, "jsonl": 10_000, "xlsx": 7_500}
#: Bytes of the table a second: §7's items were 3.0 MiB of typed JSON a 10,000, ~4 MiB/s at
#: 13,300 rows/s; wide items cost per attribute value, so the bytes bound the guess too.
BYTES_PER_SECOND = 3 * 1024 * 1024
#: How long ``plan`` (in the coordinator's invocation, before any segment starts) may read the
#: table: to find the first items a filter selects (the sample of the columns) or, for
#: ``all_columns`` in csv/xlsx, the attribute names. A table that needs segments is too large to
#: read twice, so that read stops here and the segments report what it missed.
PLAN_READ_SECONDS = 30.0
#: How the plan chose the columns (``Plan.shared["from"]``).
FROM_REQUESTED, FROM_SAMPLE, FROM_NAMES, FROM_SOME_NAMES, FROM_WHOLE_ITEMS = (
    "requested", "sample", "names", "some-names", "whole-items")

#: One scan's pages, each at most 1 MB of items (as rows, or as DynamoDB's JSON where only the
#: attribute names are read); closing it stops the scan's threads.
Pages = Generator[list[dict[str, Any]], None, None]
#: What ``_segment_pages`` makes of each item: ``plain_item`` (rows), or None (DynamoDB's JSON, for names).
Convert = Callable[[dict[str, Any]], dict[str, Any]] | None


def _plain(value: Any) -> Any:
    """DynamoDB types to JSON-friendly Python: what the rows were when boto3's resource read the
    table (``TypeDeserializer``'s values). ``plain_item`` gives the same from DynamoDB's JSON; this
    stays as the reference it is tested against (tests/unit/test_dynamodb_values.py)."""
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


# -- DynamoDB's JSON to row values, in one pass --------------------------------------------------
#
# A Scan page's items as DynamoDB sends them ({"S": "..."}, {"N": "12.50"}, ...) straight to the
# values ``_plain(TypeDeserializer().deserialize(value))`` gives, value and type: strings as they
# are; a number as an int when integral, else a float (through the Decimal boto3 would make); sets
# sorted, as ``_plain`` sorts them (by ``str``), numbers and binaries deduplicated by value as the
# set of Decimals or Binaries was; binaries as base64 text of the bytes botocore would decode;
# lists, maps, booleans and nulls as themselves.


def _decimal_number(text: str) -> int | float:
    """An ``N`` through the Decimal boto3 makes (DynamoDB's 38-digit context), then ``_plain``."""
    from boto3.dynamodb.types import DYNAMODB_CONTEXT

    number = DYNAMODB_CONTEXT.create_decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def _number_value(text: str) -> int | float:
    """An ``N`` as the Decimal would give it, without the Decimal where plain arithmetic is exact.

    At most 38 characters (so no more digits than DynamoDB's context keeps, which
    would refuse more), ASCII digits with a sign and a point (the context reads
    " 1" or "1_0" as NaN, int() and float() do not): an integer is int(); a
    fraction that is integral (``3.000``) int() of its integer part; any other is
    float() of the text, the nearest float to its value as float() of the
    Decimal is. Exponents and the rest take the Decimal.
    """
    if len(text) < 39 and text.isascii():
        whole, point, fraction = text.partition(".")
        if whole.lstrip("+-").isdigit() and (not point or fraction.isdigit()):
            try:
                return float(text) if fraction.strip("0") else int(whole)
            except ValueError:  # "+-1"
                pass
    return _decimal_number(text)


def _binary_text(text: str) -> str:
    """A ``B`` as ``_plain`` writes it: base64 of the bytes botocore decodes from the JSON's base64."""
    return base64.b64encode(base64.b64decode(text)).decode("ascii")


def plain_value(value: Mapping[str, Any]) -> Any:
    """One attribute value in DynamoDB's JSON to the row's value (see above)."""
    if "S" in value:
        return value["S"]
    if "N" in value:
        return _number_value(value["N"])
    if "BOOL" in value:
        return value["BOOL"]
    if "NULL" in value:
        return None
    if "L" in value:
        return [plain_value(v) for v in value["L"]]
    if "M" in value:
        return {k: plain_value(v) for k, v in value["M"].items()}
    if "SS" in value:
        return sorted(set(value["SS"]))
    if "NS" in value:
        from boto3.dynamodb.types import DYNAMODB_CONTEXT

        numbers = set(map(DYNAMODB_CONTEXT.create_decimal, value["NS"]))
        return sorted((int(n) if n == n.to_integral_value() else float(n) for n in numbers), key=str)
    if "B" in value:
        return _binary_text(value["B"])
    if "BS" in value:
        return sorted({_binary_text(v) for v in value["BS"]})
    raise TypeError(f"not a DynamoDB attribute value: {sorted(value)}")


def plain_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An item in DynamoDB's JSON to the row ``_plain`` made of boto3's item (strings inlined: the most)."""
    return {name: value["S"] if "S" in value else plain_value(value) for name, value in item.items()}


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
    split_by = "parallel-scan segments"
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
            "all_columns": {"type": "boolean",
                            "description": "every attribute of every item, not only those of the "
                                           "first items; csv and xlsx read the table twice. Not "
                                           "with columns"},
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

    def check(self, params: dict[str, Any], fmt: str) -> None:
        """``columns`` and ``all_columns`` ask for two different things: refuse both at once."""
        details = column_choice_problems(params)
        try:
            super().check(params, fmt)
        except ValidationError as exc:  # every invalid field in one answer
            details = [*(exc.details or []), *details]
        if details:
            raise ValidationError.of(details)

    def preflight(self, params: dict[str, Any], settings: Settings) -> None:
        """One DescribeTable: the table exists, and the index is one of its own."""
        from botocore.exceptions import ClientError

        name = params["table"]
        try:
            table = _describe_table(name, probe=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise ValidationError.of([{"field": "params.table",
                                       "issue": "names a table that does not exist"}],
                                     "table_not_found") from None
        index = params.get("index")
        indexes = sorted(i["IndexName"] for i in _indexes(table))
        if index and index not in indexes:
            issue = (f"must be an index of table {name}: {choices(indexes)}" if indexes
                     else f"must be left out: table {name} has no index")
            raise ValidationError.of([{"field": "params.index", "issue": issue}], "index_not_found")

    def open(self, params: dict[str, Any], ctx: BuildContext) -> tuple[Sequence[str], Iterator[Row]]:
        return self._open(params, ctx, whole_items=False)

    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        # jsonl has no header to fix in advance: every attribute is each item written whole
        whole = bool(params.get("all_columns")) and fmt == "jsonl"
        columns, rows = self._open(params, ctx, whole_items=whole)
        yield from self.write(columns, rows, params, fmt, ctx)

    def _open(
        self, params: dict[str, Any], ctx: BuildContext, whole_items: bool
    ) -> tuple[Sequence[str], Iterator[Row]]:
        table_name = _allowed(params, ctx.settings)
        index = params.get("index") or None
        shape = describe_source(table_name, index)
        scan_kwargs = _scan_kwargs(params)
        # an estimate (DynamoDB refreshes it about every six hours); with filters it would
        # only bound the rows from above, so a filtered export shows no total
        estimated = bool(shape.item_count) and not params.get("filters")
        if estimated:
            ctx.total_rows = shape.item_count
        requested = list(params.get("columns") or [])
        segments = int(params.get("segments") or ctx.settings.scan_segments)
        columns: list[str] = requested
        if params.get("all_columns") and not whole_items:
            # csv and xlsx fix their header first: a whole first pass learns every name
            columns = key_first(shape.keys, self._attribute_names(table_name, scan_kwargs, segments, ctx))
        pages = self._pages(table_name, scan_kwargs, segments)
        first: list[dict[str, Any]] = []
        try:
            for page in pages:  # a filtered scan can return empty pages before the first match
                ctx.check()
                if page:
                    first = page
                    break
        except BaseException:
            pages.close()
            raise
        if whole_items:
            columns = []
        elif not columns:
            columns = key_first(shape.keys, sample_names(first))
        report = ColumnReport(table_name, index, requested, columns, estimated,
                              all_columns=bool(params.get("all_columns")))
        order = partial(_keys_first_item, shape.keys) if whole_items else None
        return columns, self._rows(first, pages, ctx, report, order)

    @staticmethod
    def _rows(
        first: list[dict[str, Any]], pages: Pages, ctx: BuildContext,
        report: ColumnReport, order: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> Iterator[Row]:
        seen: set[str] = set()
        count = 0
        with closing(pages):  # a cancel, or an error downstream, stops every segment thread
            for page in chain([first], pages):
                ctx.check()  # a selective filter reads many empty pages without yielding a byte
                for item in page:
                    seen.update(item)
                    yield order(item) if order else item
                count += len(page)
        report.finish(ctx, seen, count)

    def _attribute_names(
        self, table_name: str, scan_kwargs: dict[str, Any], segments: int, ctx: BuildContext
    ) -> set[str]:
        """Every attribute name of every item the scan selects: a full read of the table."""
        names: set[str] = set()
        with closing(self._pages(table_name, scan_kwargs, segments, convert=None)) as pages:
            for page in pages:
                ctx.check()
                for item in page:
                    names.update(item)
        return names

    def _pages(self, table_name: str, scan_kwargs: dict[str, Any], segments: int,
               convert: Convert = plain_item) -> Pages:
        if segments <= 1:
            return _segment_pages(table_name, scan_kwargs, convert)
        sources = [
            partial(_segment_pages, table_name,
                    {**scan_kwargs, "Segment": i, "TotalSegments": segments}, convert)
            for i in range(segments)
        ]
        return parallel_pages(sources)

    # -- segmented builds: one invocation a parallel-scan segment ---------------------------------
    #
    # The plan cuts the scan into ``count`` DynamoDB segments (``Segment``/``TotalSegments``), one
    # an invocation, each scanned single-threaded (``params.segments``, the threads of a whole
    # build, do not multiply inside a segment). Every segment writes the plan's columns, decided
    # once in the coordinator: the requested ones; or the key attributes and the names of the
    # first items the scan selects, as a whole build samples them; or, for ``all_columns`` in csv
    # and xlsx, every name a pass of at most PLAN_READ_SECONDS found (the whole table if it is
    # read in that time, else what was read: a table that needs segments is too large to read
    # twice). jsonl with ``all_columns`` writes every item whole. What a segment saw beyond its
    # columns, or which requested columns it never saw, goes on its segment (``segment_notes``)
    # and the finalizer turns them into the task's warnings (``segment_warnings``).

    def estimate_seconds(self, params: dict[str, Any], fmt: str, settings: Settings) -> float | None:
        """From DescribeTable: the item count at ROWS_PER_SECOND or the bytes at BYTES_PER_SECOND,
        whichever is longer. A filter reads the whole table all the same. None if not known."""
        if params["table"] not in settings.exportable_tables:
            return None  # the build fails table_not_allowed, as it always did
        try:
            shape = describe_source(params["table"], params.get("index") or None)
        except Exception:  # the build tells the owner what is wrong with the source
            log.warning("could not estimate the export of %s", params["table"], exc_info=True)
            return None
        if shape.item_count is None and shape.size_bytes is None:
            return None
        return max((shape.item_count or 0) / ROWS_PER_SECOND.get(fmt, min(ROWS_PER_SECOND.values())),
                   (shape.size_bytes or 0) / BYTES_PER_SECOND)

    def plan(self, params: dict[str, Any], fmt: str, settings: Settings, count: int) -> Plan:
        """``count`` scan segments, and the columns every one of them writes."""
        table_name = _allowed(params, settings)
        index = params.get("index") or None
        shape = describe_source(table_name, index)
        requested = list(params.get("columns") or [])
        shared: dict[str, Any] = {"keys": list(shape.keys)}
        if requested:
            shared |= {"from": FROM_REQUESTED, "columns": requested}
        elif params.get("all_columns") and fmt == "jsonl":
            shared |= {"from": FROM_WHOLE_ITEMS, "columns": []}
        elif params.get("all_columns"):
            threads = int(params.get("segments") or settings.scan_segments)
            names, complete = self._plan_names(table_name, _scan_kwargs(params), threads)
            shared |= {"from": FROM_NAMES if complete else FROM_SOME_NAMES,
                       "columns": key_first(shape.keys, names)}
        else:
            shared |= {"from": FROM_SAMPLE,
                       "columns": key_first(shape.keys, self._plan_sample(table_name, index,
                                                                          _scan_kwargs(params)))}
        count = max(1, count)
        segments = tuple(Segment(i + 1, {"segment": i, "total": count}) for i in range(count))
        total = shape.item_count if shape.item_count and not params.get("filters") else None
        return Plan(segments, shared, total_rows=total)

    def _plan_sample(self, table_name: str, index: str | None, scan_kwargs: dict[str, Any]) -> set[str]:
        """The names of the first items the scan selects (what a whole build samples).

        A selective filter can read many empty pages first: past PLAN_READ_SECONDS the
        sample is the first items of the table, unfiltered, instead.
        """
        started = time.monotonic()
        with closing(_segment_pages(table_name, scan_kwargs, convert=None)) as pages:
            for page in pages:
                if page:
                    return sample_names(page)
                if time.monotonic() - started > PLAN_READ_SECONDS:
                    return _sample_attribute_names(table_name, index)
        return set()  # nothing selected: the key attributes alone, as a whole build's header

    def _plan_names(self, table_name: str, scan_kwargs: dict[str, Any], threads: int
                    ) -> tuple[set[str], bool]:
        """Attribute names of what the scan selects, read for at most PLAN_READ_SECONDS (with a
        whole build's scan threads: the coordinator has nothing else to do); and whether that was all."""
        names: set[str] = set()
        started = time.monotonic()
        with closing(self._pages(table_name, scan_kwargs, threads, convert=None)) as pages:
            for page in pages:
                for item in page:
                    names.update(item)
                if time.monotonic() - started > PLAN_READ_SECONDS:
                    return names, False
        return names, True

    def open_segment(
        self, params: dict[str, Any], ctx: BuildContext, shared: dict[str, Any], segment: Segment,
    ) -> tuple[Sequence[str], Iterator[Row]]:
        table_name = _allowed(params, ctx.settings)
        scan_kwargs = _scan_kwargs(params)
        total = int(segment.spec.get("total", 1))
        if total > 1:
            scan_kwargs |= {"Segment": int(segment.spec["segment"]), "TotalSegments": total}
        pages = _segment_pages(table_name, scan_kwargs)
        whole = shared.get("from") == FROM_WHOLE_ITEMS
        columns = list(shared.get("columns") or [])
        order = partial(_keys_first_item, list(shared.get("keys") or [])) if whole else None
        requested = columns if shared.get("from") == FROM_REQUESTED else []
        return columns, self._segment_rows(pages, ctx, requested, [] if whole else columns, order)

    @staticmethod
    def _segment_rows(
        pages: Pages, ctx: BuildContext, requested: Sequence[str], columns: Sequence[str],
        order: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> Iterator[Row]:
        seen: set[str] = set()
        with closing(pages):
            for page in pages:
                ctx.check()  # a selective filter reads many empty pages without yielding a byte
                for item in page:
                    seen.update(item)
                    yield order(item) if order else item
        ctx.notes.update(segment_column_notes(requested, columns, seen))

    def segment_notes(self, ctx: BuildContext) -> dict[str, Any] | None:
        return {**(super().segment_notes(ctx) or {}), **ctx.notes} or None

    def segment_warnings(
        self, params: dict[str, Any], shared: dict[str, Any], notes: Sequence[dict[str, Any] | None],
    ) -> list[dict[str, str]]:
        """The warnings one worker would have left, from what each segment saw.

        A requested column is not found if no segment saw it (and the source's
        first items lack it, as for a whole build); the names left out are every
        segment's together.
        """
        requested = list(params.get("columns") or [])
        if requested:
            missing = set(range(len(requested)))
            for note in notes:
                missing &= set((note or {}).get("unseen", []))
            if not missing:
                return []
            seen = {c for i, c in enumerate(requested) if i not in missing}
            known = _sample_attribute_names(params["table"], params.get("index") or None)
            return missing_column_warnings(requested, seen, known)
        listed: set[str] = set()
        exact, at_least = True, 0
        for note in notes:
            names = list((note or {}).get("left", []))
            count = int((note or {}).get("left_n", len(names)))
            listed.update(names)
            exact = exact and count <= len(names)
            at_least = max(at_least, count)
        if not listed:
            return []
        return [left_out_warning(listed, len(listed) if exact else max(at_least, len(listed)), exact,
                                 str(shared.get("from", FROM_SAMPLE)))]


# -- which columns, in which order ----------------------------------------------------------------


@dataclass(frozen=True)
class SourceShape:
    """What DescribeTable says about the table or index an export reads."""

    #: the key attributes: the table's hash and range key, then the index's (none twice)
    keys: tuple[str, ...]
    #: DynamoDB's item count of the table or index, refreshed about every six hours
    #: (an estimate); None where DescribeTable reports none
    item_count: int | None
    #: its size in bytes (TableSizeBytes or IndexSizeBytes, refreshed alike); None if not reported
    size_bytes: int | None = None


def _key_names(schema: Sequence[Mapping[str, str]]) -> list[str]:
    return [k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"])]  # HASH, RANGE


def _describe_table(table_name: str, *, probe: bool = False) -> dict[str, Any]:
    """DescribeTable's ``Table``: at create through the quick probe client, in a build the usual one."""
    from chalicelib.adapters.aws import client

    return client("dynamodb", probe=probe).describe_table(TableName=table_name)["Table"]


def _indexes(table: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The table's secondary indexes, global and local, as DescribeTable lists them."""
    return [*table.get("GlobalSecondaryIndexes", []), *table.get("LocalSecondaryIndexes", [])]


def source_shape(table: Mapping[str, Any], index: str | None) -> SourceShape:
    """The key attributes and item count of ``table`` (DescribeTable's ``Table``) or of its ``index``."""
    keys = _key_names(table.get("KeySchema", []))
    count, size = table.get("ItemCount"), table.get("TableSizeBytes")
    if index:
        found = next((i for i in _indexes(table) if i.get("IndexName") == index), None)
        if found is None:
            raise ExportError("index_not_found",
                              f"Index {index!r} does not exist on {table.get('TableName')!r}.")
        keys += [k for k in _key_names(found.get("KeySchema", [])) if k not in keys]
        count, size = found.get("ItemCount"), found.get("IndexSizeBytes")
    return SourceShape(tuple(keys), int(count) if count is not None else None,
                       int(size) if size is not None else None)


def describe_source(table_name: str, index: str | None) -> SourceShape:
    """One DescribeTable: the table (and index) exist, their key attributes and item count."""
    from botocore.exceptions import ClientError

    try:
        table = _describe_table(table_name)
    except ClientError as exc:
        raise _source_error(exc, table_name, index) from exc
    return source_shape(table, index)


def key_first(keys: Sequence[str], names: Iterable[str]) -> list[str]:
    """The key attributes, then every other name in code-point order: the same names, the same columns."""
    return [*keys, *sorted(set(names).difference(keys))]


def _keys_first_item(keys: Sequence[str], item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in key_first([k for k in keys if k in item], item)}


def _allowed(params: Mapping[str, Any], settings: Settings) -> str:
    """The table to read, if this deployment may: the build's check, whatever the policy said."""
    table_name = str(params["table"])
    if table_name not in settings.exportable_tables:
        raise ExportError("table_not_allowed",
                          f"Table {table_name!r} is not on this deployment's export allow-list.")
    return table_name


def _scan_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """Scan's arguments for the params: the index, the filter, the requested columns."""
    scan_kwargs: dict[str, Any] = {}
    if params.get("index"):
        scan_kwargs["IndexName"] = params["index"]
    if params.get("filters"):
        scan_kwargs["FilterExpression"] = build_filter(params["filters"])
    requested = list(params.get("columns") or [])
    if requested:
        names = {f"#c{i}": c for i, c in enumerate(requested)}
        scan_kwargs["ProjectionExpression"] = ", ".join(names)
        scan_kwargs["ExpressionAttributeNames"] = names
    return scan_kwargs


def sample_names(first_page: Sequence[Mapping[str, Any]]) -> set[str]:
    """The attribute names of the first ``SAMPLE_ITEMS`` items, from which the columns are chosen."""
    names: set[str] = set()
    for item in first_page[:SAMPLE_ITEMS]:
        names.update(item)
    return names


def column_choice_problems(params: Mapping[str, Any]) -> list[dict[str, str]]:
    """Validation details for a choice of columns the schema cannot refuse."""
    if params.get("columns") and params.get("all_columns"):
        return [{"field": "params.all_columns",
                 "issue": "cannot be true together with params.columns; give one or the other"}]
    return []


def _listed(names: Iterable[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(repr(n) for n in ordered[:LISTED_NAMES])
    return shown + (f" and {len(ordered) - LISTED_NAMES} more" if len(ordered) > LISTED_NAMES else "")


def missing_column_warnings(
    requested: Sequence[str], seen: Iterable[str], known: Iterable[str]
) -> list[dict[str, str]]:
    """A warning for each requested column that no exported item had and no sampled item has.

    ``seen`` are the attribute names of the exported items, ``known`` those of
    a sample of the table or index: a column they both lack is most likely a
    typo, and its column in the file is empty. Each warning names the column
    and, when one is close, the attribute that was probably meant.
    """
    seen, known = set(seen), set(known)
    warnings = []
    for i, name in enumerate(requested):
        if name in seen or name in known:
            continue
        message = (f"No exported item, and none of the first {SAMPLE_ITEMS} items of the source, "
                   f"has the attribute {name!r}, so its column is empty.")
        close = difflib.get_close_matches(name, sorted(seen | known), n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        warnings.append({"code": "column_not_found", "field": f"params.columns[{i}]",
                         "message": message})
    return warnings


@dataclass(frozen=True)
class ColumnReport:
    """What the end of an export says about its columns and its row count."""

    table_name: str
    index: str | None
    requested: Sequence[str]
    columns: Sequence[str]
    #: the build's total is DynamoDB's estimate: the count replaces it at the end
    estimated: bool
    all_columns: bool

    def finish(self, ctx: BuildContext, seen: set[str], count: int) -> None:
        if self.estimated:
            ctx.total_rows = count  # the scan is over: the count is exact now
        if self.requested:
            missing = [c for c in self.requested if c not in seen]
            known = _sample_attribute_names(self.table_name, self.index) if missing else set()
            for warning in missing_column_warnings(self.requested, seen, known):
                ctx.warn(warning["code"], warning["field"], warning["message"])
            return
        left_out = seen.difference(self.columns) if self.columns else set()
        if left_out:
            warning = left_out_warning(left_out, len(left_out), True,
                                       FROM_NAMES if self.all_columns else FROM_SAMPLE)
            ctx.warn(warning["code"], warning["field"], warning["message"])


def left_out_warning(names: set[str], count: int, exact: bool, chosen_from: str) -> dict[str, str]:
    """``columns_left_out``: ``count`` names some exported items had and the file has no column for.

    ``names`` are all of them, or (``exact`` False, from segments that each
    kept their first LISTED_NAMES) the first of them in order; ``chosen_from``
    says how the columns were chosen (``Plan.shared["from"]``).
    """
    why = {
        FROM_NAMES: "appeared after the first pass read the attribute names",
        FROM_SOME_NAMES: f"are in none of the items read for the attribute names before the export "
                         f"was split (a table this large is not read twice: that read stops after "
                         f"{PLAN_READ_SECONDS:g} seconds)",
    }.get(chosen_from, f"are in none of the first {SAMPLE_ITEMS} items, from which the columns were "
                       "chosen")
    advice = ("Name the columns in params.columns, or ask for jsonl, which writes every item whole."
              if chosen_from == FROM_SOME_NAMES else
              "Name the columns in params.columns, or set params.all_columns to true.")
    listed = _listed(names) if exact else ", ".join(repr(n) for n in sorted(names)[:LISTED_NAMES]) + (
        " and others" if count > min(len(names), LISTED_NAMES) else "")
    return {"code": "columns_left_out", "field": "params.columns",
            "message": f"{'' if exact else 'At least '}{count} attribute(s) that some exported items "
                       f"have {why}, so the file has no column for them: {listed}. {advice}"}


def segment_column_notes(requested: Sequence[str], columns: Sequence[str], seen: set[str]
                         ) -> dict[str, Any]:
    """What one segment tells the finalizer of its columns, in a few hundred bytes at most.

    ``unseen``: the indexes of the requested columns none of its items had;
    ``left``/``left_n``: the first LISTED_NAMES names (in order) its items had
    beyond the columns, and how many there were. Nothing when all is well.
    """
    if requested:
        unseen = [i for i, name in enumerate(requested) if name not in seen]
        return {"unseen": unseen} if unseen else {}
    left = seen.difference(columns) if columns else set()
    if not left:
        return {}
    return {"left": sorted(left)[:LISTED_NAMES], "left_n": len(left)}


def _sample_attribute_names(table_name: str, index: str | None) -> set[str]:
    """Attribute names of the first ``SAMPLE_ITEMS`` items (one small Scan, no filter).

    Only read when a requested column was in no exported item, to tell a typo
    from an attribute the filter left out; a failure here only loses that hint.
    """
    from chalicelib.adapters.aws import client

    kwargs: dict[str, Any] = {"TableName": table_name, "Limit": SAMPLE_ITEMS}
    if index:
        kwargs["IndexName"] = index
    try:
        items = client("dynamodb").scan(**kwargs).get("Items", [])
    except Exception:
        log.warning("could not sample %s for column names", table_name, exc_info=True)
        return set()
    return sample_names(items)


def _segment_pages(table_name: str, scan_kwargs: dict[str, Any], convert: Convert = plain_item) -> Pages:
    """One scan segment, page by page (at most 1 MB of items a page), each item through ``convert``.

    The pages come from ``chalicelib.adapters.dynamodb_scan`` as DynamoDB's JSON,
    not through boto3's resource: botocore's parse and the resource's
    deserializer were most of an export's CPU (docs/benchmarks.md section 7);
    ``plain_item`` makes the same rows in one pass. Its reader is thread-safe:
    every segment thread shares it.
    """
    from botocore.exceptions import ClientError

    from chalicelib.adapters.dynamodb_scan import scan_request, scanner

    scan = scanner()
    request = scan_request(table_name, scan_kwargs)
    while True:
        try:
            page = scan.page(request)
        except ClientError as exc:
            raise _source_error(exc, table_name, request.get("IndexName")) from exc
        items = page.get("Items", [])
        yield list(map(convert, items)) if convert else items
        if "LastEvaluatedKey" not in page:
            return
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}


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
) -> Pages:
    """Pages from several scan segments read at once, yielded in segment order.

    Segment 0's pages come first, then segment 1's, and so on, whichever
    segment answers first: the same data gives the same file. Every segment
    reads ahead into a buffer of its own of at most ``per_source`` pages; a
    segment whose turn has not come blocks when its buffer is full, until the
    consumer reaches it. So at most ``per_source`` + 1 pages a segment (its
    buffer and the page it is waiting to hand over) are held, however large
    the table. The price of the order: once the later segments' buffers are
    full, the scan goes as fast as the segment being written (plus its own
    read-ahead), not as fast as all segments together.

    A segment's error is raised at once, not when its turn comes; closing the
    generator (a cancel, an error downstream) stops every segment thread.
    """
    if per_source < 1:
        raise ValueError("per_source must be at least 1")
    changed = threading.Condition()
    buffers: list[deque[list[dict[str, Any]]]] = [deque() for _ in sources]
    finished = [False] * len(sources)
    failure: list[BaseException] = []
    stopped = False

    def run(index: int, source: Callable[[], Iterator[list[dict[str, Any]]]]) -> None:
        buffer = buffers[index]
        try:
            for page in source():
                with changed:
                    while len(buffer) >= per_source and not stopped:
                        changed.wait()
                    if stopped:
                        return
                    buffer.append(page)
                    changed.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            with changed:
                failure.append(exc)
                changed.notify_all()
            return
        with changed:
            finished[index] = True
            changed.notify_all()

    threads = [threading.Thread(target=run, args=(i, src), daemon=True, name=f"scan-segment-{i}")
               for i, src in enumerate(sources)]
    for thread in threads:
        thread.start()
    try:
        for index, buffer in enumerate(buffers):
            while True:
                with changed:
                    while not buffer and not finished[index] and not failure:
                        changed.wait()
                    if failure:
                        raise failure[0]
                    if not buffer:  # this segment is done: on to the next
                        break
                    page = buffer.popleft()
                    changed.notify_all()
                yield page
    finally:
        with changed:
            stopped = True
            changed.notify_all()
        for thread in threads:
            thread.join(timeout=5)
