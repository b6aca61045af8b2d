"""The dynamodb_rows benchmark: its side converter gives the worker's rows, its variants do the same work.

docs/benchmarks.md (section 7) states a measured effect of ``plain_item``
and of the raw-attribute parser; that figure means something only if they
give exactly the rows the worker's path gives, value and type. And the
section compares variants that must encode the same rows into the same
bytes, which the harness checks at run time and these tests pin.
"""

from __future__ import annotations

import base64
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from bench.__main__ import dynamodb_rows_summary
from bench.dynamodb_rows import (
    CONVERT_ONLY,
    ENCODING,
    END_TO_END,
    plain_item,
    plan,
    raw_attribute_parser,
    run,
)
from chalicelib.exporters.dynamodb_table import _plain
from local.seed import demo_item

#: Every DynamoDB type, and the numbers whose conversion has edges (integral decimals, exponents,
#: 38 digits, negative zero), nested in lists and maps.
ODD_ITEM: dict[str, Any] = {
    "id": "odd", "text": "含,逗号 =1+1", "empty": "", "int": 42, "negative": -7, "zero": Decimal("-0"),
    "decimal": Decimal("12.50"), "integral": Decimal("3.000"), "exponent": Decimal("1E+3"),
    "small": Decimal("1E-7"), "wide": Decimal("1234567890123456789012345678901234567.8"),
    "big_int": 10**37, "flag": False, "nothing": None,
    "blob": Binary(b"\x00\xffbytes"), "blobs": {Binary(b"b"), Binary(b"a"), Binary(b"\x01")},
    "words": {"pear", "apple", "Zebra"}, "numbers": {Decimal("10"), Decimal("9.5"), Decimal("-1")},
    "list": [1, "two", [Decimal("3.5"), None], {"k": True}],
    "map": {"inner": {"deep": [Decimal("0.1"), {"s": "x"}]}, "n": Decimal("7")},
}


def _json_typed(value: Any) -> Any:
    """A TypeSerializer result as DynamoDB's JSON has it: binaries as base64 text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Binary):
        return _json_typed(value.value)
    if isinstance(value, dict):
        return {k: _json_typed(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_json_typed(v) for v in value]
    return value


def _body(items: list[dict[str, Any]]) -> bytes:
    serialize = TypeSerializer().serialize
    typed = [{k: _json_typed(serialize(v)) for k, v in item.items()} for item in items]
    return json.dumps({"Items": typed, "Count": len(typed), "ScannedCount": len(typed)},
                      ensure_ascii=False).encode("utf-8")


def _scan_shape() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("dynamodb").operation_model("Scan").output_shape


def _response(body: bytes) -> dict[str, Any]:
    return {"status_code": 200, "headers": {"x-amzn-requestid": "r"}, "body": body}


def _exactly(rows: list[dict[str, Any]]) -> str:
    """Rows compared by value and type (1 == 1.0 == True, but not for an export)."""
    return repr(rows)


def _worker_rows(body: bytes) -> list[dict[str, Any]]:
    """What the worker yields: botocore's parse, the resource's deserializer, then ``_plain``."""
    from botocore.parsers import create_parser

    parsed = create_parser("json").parse(_response(body), _scan_shape())
    deserialize = TypeDeserializer().deserialize
    return [_plain({k: deserialize(v) for k, v in item.items()}) for item in parsed["Items"]]


@pytest.fixture(scope="module")
def demo_items() -> list[dict[str, Any]]:
    rng = random.Random(20240501)
    return [demo_item(i, rng) for i in range(1, 301)] + [ODD_ITEM]


def test_plain_item_gives_the_rows_the_worker_gives_after_botocore_parses(demo_items):
    from botocore.parsers import create_parser

    body = _body(demo_items)
    parsed = create_parser("json").parse(_response(body), _scan_shape())
    rows = [plain_item(item) for item in parsed["Items"]]
    assert _exactly(rows) == _exactly(_worker_rows(body))
    odd = rows[-1]
    assert odd["integral"] == 3 and type(odd["integral"]) is int
    assert odd["decimal"] == 12.5 and type(odd["decimal"]) is float
    assert odd["blobs"] == sorted(base64.b64encode(b).decode() for b in (b"b", b"a", b"\x01"))


def test_the_raw_attribute_parser_with_plain_item_gives_the_same_rows(demo_items):
    body = _body(demo_items)
    parsed = raw_attribute_parser().parse(_response(body), _scan_shape())
    assert parsed["Items"][-1]["blob"] == {"B": base64.b64encode(b"\x00\xffbytes").decode()}  # left as JSON
    assert parsed["ResponseMetadata"]["RequestId"] == "r"
    assert _exactly([plain_item(item) for item in parsed["Items"]]) == _exactly(_worker_rows(body))


def test_plain_item_refuses_what_is_no_attribute_value():
    with pytest.raises(TypeError):
        plain_item({"x": {"Q": "?"}})


#: DescribeTable's answer for the recorded table (what ``record`` keeps beside the pages).
DESCRIBED = {"Table": {"TableName": "demo-users", "ItemCount": 0, "TableSizeBytes": 0,
                       "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]}}


@pytest.fixture(scope="module")
def recording(tmp_path_factory, demo_items) -> Path:
    """Two pages in the recorder's format, the odd item on the second."""
    pages = [demo_items[:150], demo_items[150:]]
    path = tmp_path_factory.mktemp("ddb") / "pages.json"
    path.write_text(json.dumps({
        "table": "demo-users", "keys": ["id"], "segments": 2, "seeded": len(demo_items),
        "pages": [{"segment": i, "items": len(p), "body": _body(p).decode("utf-8"), "moto_bytes": 0,
                   "headers": {"x-amzn-requestid": "r"}} for i, p in enumerate(pages)],
        "describe": {"body": json.dumps(DESCRIBED), "headers": {"x-amzn-requestid": "r"}},
    }, ensure_ascii=False), encoding="utf-8")
    return path


def test_every_variant_sees_every_item_and_the_encoders_write_the_same_bytes(recording, demo_items):
    results = [run(variant, 2, fmt, str(recording)) for variant, fmt in plan()]
    assert {v for v, _ in plan()} == set(CONVERT_ONLY) | set(ENCODING) | set(END_TO_END)
    items = 2 * len(demo_items)
    assert all(r["items"] == items for r in results)
    assert all(r["rows"] == items for r in results if "rows" in r)
    assert all(r["pages"] == 4 for r in results if "pages" in r)
    for fmt in ("csv", "jsonl", "xlsx"):
        written = {(r["size"], r["md5"]) for r in results if r["fmt"] == fmt and r["variant"] != "peer"}
        assert len(written) == 1, (fmt, written)  # before and after too: the worker's own bytes
    assert results[0]["columns"][0] == "id" and results[0]["columns"][1:] == sorted(results[0]["columns"][1:])
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in results)


def _fake_runs(seconds: dict[tuple[str, str | None], list[float]], md5: str = "m") -> dict[Any, Any]:
    return {key: [{"items": 10, "rows": 10, "seconds": s, "cpu_seconds": s, "peak_rss": 1, "size": 1,
                   "md5": md5 if key[1] else None, "_machine": {"others_share": 0.0}} for s in values]
            for key, values in seconds.items()}


def test_the_summary_pairs_the_ratios_within_each_round():
    seconds = {key: [1.0, 1.0, 1.0] for key in plan()}
    seconds[("typed", "csv")] = [4.0, 8.0, 5.0]
    seconds[("encode", "csv")] = [1.0, 4.0, 1.0]  # conversion share per round: 75%, 50%, 80%
    summary = dynamodb_rows_summary({"items": 5}, _fake_runs(seconds), repeat_pages=2)
    share = summary["ratios"]["seconds"]["conversion_share"]["csv"]
    assert share == {"median": 0.75, "min": 0.5, "max": 0.8}
    typed = next(r for r in summary["rows"] if r["variant"] == "typed" and r["fmt"] == "csv")
    assert typed["seconds"] == 5.0 and typed["rows_per_s"] == 2.0 and summary["rounds"] == 3


def test_the_summary_refuses_variants_that_wrote_different_bytes():
    runs = _fake_runs({key: [1.0] for key in plan()})
    runs[("encode", "csv")][0]["md5"] = "other"
    with pytest.raises(SystemExit, match="csv variants did not write the same bytes"):
        dynamodb_rows_summary({"items": 5}, runs, repeat_pages=2)


def test_the_peer_writes_bytes_of_its_own_and_after_is_judged_against_before():
    seconds = {key: [1.0, 1.0, 1.0] for key in plan()}
    seconds[("before", "csv")] = [6.0, 9.0, 5.0]
    seconds[("after", "csv")] = [2.0, 3.0, 2.5]  # 3×, 3×, 2× a round
    seconds[("peer", "csv")] = [4.0, 4.0, 4.0]
    runs = _fake_runs(seconds)
    for run_ in runs[("peer", "csv")]:
        run_["md5"] = "the peer's own"
    summary = dynamodb_rows_summary({"items": 5}, runs, repeat_pages=2)
    ratios = summary["ratios"]["seconds"]
    assert ratios["after_vs_before"]["csv"] == {"median": 3.0, "min": 2.0, "max": 3.0}
    assert ratios["after_vs_peer"] == {"median": 1.6, "min": 1.3333333333333333, "max": 2.0}

    from bench.__main__ import FULL, Results
    from bench.report import _ddb_end_to_end_md, _ddb_targets

    results = Results(FULL, dynamodb_rows=summary | {"recording": {"segments": 4, "items": 5}})
    (target,) = _ddb_targets(results)
    assert target.met is True and target.measured.startswith("3.00× (per round 2.00–3.00×")
    text = _ddb_end_to_end_md(results)
    assert "| csv | 2 | 4 | 3.00× (2.00×–3.00×)" in text and "1.60× (1.33×–2.00×) the peer" in text

    seconds[("after", "csv")] = [4.0, 4.5, 3.0]  # under 2× in every round
    (target,) = _ddb_targets(Results(FULL, dynamodb_rows=dynamodb_rows_summary(
        {"items": 5}, _fake_runs(seconds), repeat_pages=2)))
    assert target.met is False
