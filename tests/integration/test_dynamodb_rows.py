"""dynamodb_table on moto: the JSON reader writes the bytes the boto3 resource path wrote.

The exporter reads Scan pages as DynamoDB's JSON (chalicelib/adapters/dynamodb_scan.py) and
makes rows with ``plain_item``; before, it read with boto3's resource and ``_plain``
(``bench.dynamodb_rows.typed_segment_pages``, that code). Each export here runs twice through
the exporter's own ``stream``, once with each reader, on a table with every DynamoDB type,
several pages a segment, and the filters, projections, index and segments the exporter uses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import Binary
from moto import mock_aws

from bench.dynamodb_rows import typed_segment_pages
from chalicelib.adapters import aws
from chalicelib.adapters.dynamodb_scan import DynamoDBScan
from chalicelib.config import Settings
from chalicelib.exporters import BuildContext, dynamodb_table, get_exporter

TABLE = "kinds"
INDEX = "by-blob"
#: ~9.5 KB an item: moto answers 1 MB a page, so several pages a segment
ITEMS = 500
PAD = "p" * 9000


def item(i: int) -> dict[str, Any]:
    """Every DynamoDB type, the numbers whose conversion has edges, some attributes only on some items."""
    row: dict[str, Any] = {
        "pk": f"k{i:04d}", "rk": Decimal(i) / 4 if i % 3 else i,
        "text": ["含,逗号 =1+1", 'has "quotes"', "multi\nline", "", "tab\there"][i % 5],
        "int": i * 7 - 300, "decimal": Decimal("12.50") + i, "integral": Decimal("3.000"),
        "exponent": Decimal("1E+3"), "small": Decimal("1E-7"), "zero": Decimal("-0"),
        "wide": Decimal("1234567890123456789012345678901234567.8"), "big": 10**37 + i,
        "flag": i % 2 == 0, "nothing": None,
        "blob": Binary(bytes([i % 256, 0, 255]) + b"bytes"), "blobkey": Binary(bytes([i % 7, i % 256])),
        "words": {"pear", "apple", f"Zebra{i % 4}"}, "numbers": {Decimal("10"), Decimal("9.5"), Decimal(-i)},
        "blobs": {Binary(b"b"), Binary(b"a"), Binary(bytes([i % 256]))},
        "list": [1, "two", [Decimal("3.5"), None], {"k": True}, Decimal("0.1")],
        "map": {"inner": {"deep": [Decimal("0.1"), {"s": "x"}]}, "n": Decimal(i), "b": Binary(b"\x01")},
        "pad": PAD,
    }
    if i % 4 == 0:
        row["rare"] = f"only some {i}"
    if i % 9 == 0:
        del row["text"]
    return row


@pytest.fixture(scope="module")
def table() -> Iterator[Any]:
    with mock_aws():
        aws.reset()
        created = boto3.resource("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "rk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "rk", "AttributeType": "N"},
                                  {"AttributeName": "blobkey", "AttributeType": "B"}],
            GlobalSecondaryIndexes=[{"IndexName": INDEX, "Projection": {"ProjectionType": "ALL"},
                                     "KeySchema": [{"AttributeName": "blobkey", "KeyType": "HASH"},
                                                   {"AttributeName": "pk", "KeyType": "RANGE"}]}],
        )
        with created.batch_writer() as batch:
            for i in range(ITEMS):
                batch.put_item(Item=item(i))
        yield created
    aws.reset()


@pytest.fixture
def requests(monkeypatch) -> list[dict[str, Any]]:
    """The Scan requests the JSON reader sends (its ``page`` calls)."""
    sent: list[dict[str, Any]] = []
    page = DynamoDBScan.page

    def watched(self, request):
        sent.append(dict(request))
        return page(self, request)

    monkeypatch.setattr(DynamoDBScan, "page", watched)
    return sent


def ctx() -> BuildContext:
    return BuildContext(dataclasses.replace(Settings.from_env(), exportable_tables=(TABLE,)))


def exported(params: dict[str, Any], fmt: str) -> tuple[bytes, BuildContext]:
    context = ctx()
    return b"".join(get_exporter("dynamodb_table").stream(params, fmt, context)), context


def both(monkeypatch, params: dict[str, Any], fmt: str) -> tuple[bytes, bytes, BuildContext]:
    """The export with the exporter's reader, then with the typed reader it replaced."""
    new, context = exported(params, fmt)
    with monkeypatch.context() as patch:
        patch.setattr(dynamodb_table, "_segment_pages", typed_segment_pages)
        old, old_context = exported(params, fmt)
    assert (context.rows, context.warnings) == (old_context.rows, old_context.warnings)
    return new, old, context


FILTERS = [{"attr": "int", "op": "between", "value": [-100, 3000]},
           {"attr": "flag", "op": "eq", "value": True},
           {"attr": "words", "op": "contains", "value": "pear"},
           {"attr": "decimal", "op": "gt", "value": 40.5}]


PARAMS = {
    "one-segment": {"segments": 1},
    "three-segments": {"segments": 3},
    "all-columns": {"segments": 2, "all_columns": True},
    "filters": {"segments": 2, "filters": FILTERS},
    "in-and-columns": {"segments": 2,
                       "columns": ["rk", "pk", "blob", "numbers", "map", "missing", "zero", "nothing"],
                       "filters": [{"attr": "pk", "op": "in", "value": ["k0004", "k0008", "k0100", "k0499"]},
                                   {"attr": "text", "op": "begins_with", "value": "含"}]},
    "index": {"index": INDEX, "segments": 2},
}
#: every case in csv, the worker's usual format; jsonl (every value as JSON) and xlsx (typed cells) on some
CASES = [(name, "csv") for name in PARAMS] + [(name, fmt) for fmt in ("jsonl", "xlsx")
                                              for name in ("three-segments", "all-columns", "in-and-columns")]


@pytest.mark.parametrize(("case", "fmt"), CASES, ids=[f"{c}-{f}" for c, f in CASES])
def test_the_json_reader_writes_the_bytes_the_typed_reader_wrote(table, monkeypatch, requests, case, fmt):
    params = PARAMS[case]
    new, old, context = both(monkeypatch, {"table": TABLE, **params}, fmt)
    assert new == old
    assert context.rows > 0
    whole = not params.get("filters")
    if whole:
        assert context.rows == ITEMS
    scans = [r for r in requests if "Limit" not in r]  # not the sample of a missing column's warning
    segments = params["segments"]
    starts = [r for r in scans if "ExclusiveStartKey" not in r]
    # every segment read page by page, its LastEvaluatedKey handed back as DynamoDB sent it
    assert len(starts) == segments * (2 if params.get("all_columns") and fmt != "jsonl" else 1)
    assert {r.get("Segment") for r in scans} == (set(range(segments)) if segments > 1 else {None})
    assert len(scans) > len(starts)
    if params.get("index"):
        assert all(r["IndexName"] == INDEX for r in scans)
        keys = [r["ExclusiveStartKey"] for r in scans if "ExclusiveStartKey" in r]
        assert keys and all(set(k["blobkey"]) == {"B"} for k in keys)  # binary keys, base64 as sent
    if params.get("columns"):
        assert all(r["ProjectionExpression"] == ", ".join(f"#c{i}" for i in range(8)) for r in scans)
    if params.get("filters"):
        assert all("FilterExpression" in r and r["ExpressionAttributeValues"] for r in scans)


def test_rows_keep_every_type_as_the_typed_reader_gave_it(table, monkeypatch):
    """jsonl shows the values: the same bytes above means the same values, these are they."""
    new, old, _ = both(monkeypatch, {"table": TABLE, "segments": 1,
                                     "filters": [{"attr": "pk", "op": "eq", "value": "k0004"}]}, "jsonl")
    assert new == old
    (row,) = [json.loads(line) for line in new.decode("utf-8").splitlines()]
    assert row["rk"] == 1 and row["int"] == -272 and row["decimal"] == 16.5 and row["integral"] == 3
    assert row["exponent"] == 1000 and row["small"] == 1e-07 and row["zero"] == 0 and row["big"] == 10**37 + 4
    assert row["wide"] == 1.2345678901234568e36 and row["flag"] is True and row["nothing"] is None
    assert row["blob"] == "BAD/Ynl0ZXM=" and row["blobs"] == ["BA==", "YQ==", "Yg=="]
    assert row["words"] == ["Zebra0", "apple", "pear"] and row["numbers"] == [-4, 10, 9.5]
    assert row["list"] == [1, "two", [3.5, None], {"k": True}, 0.1]
    assert row["map"] == {"inner": {"deep": [0.1, {"s": "x"}]}, "n": 4, "b": "AQ=="}


@pytest.mark.parametrize(("name", "kwargs", "code"), [
    ("no-such-table", {}, "table_not_found"),
    (TABLE, {"IndexName": "no-such-index"}, "index_not_found"),
])
def test_a_refused_scan_is_the_same_export_error(table, name, kwargs, code):
    from chalicelib.errors import ExportError

    raised = []
    for reader in (dynamodb_table._segment_pages, typed_segment_pages):
        with pytest.raises(ExportError) as error:
            list(reader(name, kwargs))
        raised.append((error.value.code, str(error.value)))
    assert raised[0] == raised[1] and raised[0][0] == code
