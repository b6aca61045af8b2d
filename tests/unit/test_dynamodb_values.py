"""``plain_item``: DynamoDB's JSON to the row values the boto3 path gave, exactly (value and type).

The reference is what the exporter did before: botocore's parse of the Scan body, boto3's
``TypeDeserializer`` on each attribute value, then ``_plain``. Equal values of other types
(1 == 1.0 == True) would still change the bytes of an export, so rows compare by ``repr``.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.exporters.dynamodb_table import _plain, plain_item, plain_value


def _scan_shape() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("dynamodb").operation_model("Scan").output_shape


SHAPE = _scan_shape()


def typed_path(body: bytes) -> list[dict[str, Any]]:
    """The rows of the boto3 path: botocore's parse, ``TypeDeserializer``, ``_plain``."""
    from botocore.parsers import create_parser

    parsed = create_parser("json").parse({"status_code": 200, "headers": {}, "body": body}, SHAPE)
    deserialize = TypeDeserializer().deserialize
    return [_plain({k: deserialize(v) for k, v in item.items()}) for item in parsed["Items"]]


def json_path(body: bytes) -> list[dict[str, Any]]:
    """The rows of the JSON reader: ``json.loads`` of the body, ``plain_item``."""
    return [plain_item(item) for item in json.loads(body.decode("utf-8"))["Items"]]


def body_of(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"Items": items, "Count": len(items)}, ensure_ascii=False).encode("utf-8")


def _as_json(value: Any) -> Any:
    """A TypeSerializer result as DynamoDB's JSON has it: binaries as base64 text."""
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_as_json(v) for v in value]
    return value


def typed(item: dict[str, Any]) -> dict[str, Any]:
    serialize = TypeSerializer().serialize
    return {k: _as_json(serialize(v)) for k, v in item.items()}


#: Every DynamoDB type, and the numbers whose conversion has edges, nested in lists and maps.
EVERY_TYPE: dict[str, Any] = {
    "id": "odd", "text": "含,逗号 =1+1", "empty": "", "int": 42, "negative": -7, "zero": Decimal("-0"),
    "decimal": Decimal("12.50"), "integral": Decimal("3.000"), "exponent": Decimal("1E+3"),
    "small": Decimal("1E-7"), "wide": Decimal("1234567890123456789012345678901234567.8"),
    "big_int": 10**37, "max_digits": -(10**38 - 1), "flag": False, "yes": True, "nothing": None,
    "blob": Binary(b"\x00\xffbytes"), "empty_blob": Binary(b""),
    "blobs": {Binary(b"b"), Binary(b"a"), Binary(b"\x01")},
    "words": {"pear", "apple", "Zebra", "10", "9"}, "numbers": {Decimal("10"), Decimal("9.5"), Decimal("-1")},
    "list": [1, "two", [Decimal("3.5"), None], {"k": True}, [], {}],
    "map": {"inner": {"deep": [Decimal("0.1"), {"s": "x"}]}, "n": Decimal("7"), "b": Binary(b"\x02")},
}


def test_every_type_gives_the_value_and_type_the_boto3_path_gave():
    body = body_of([typed(EVERY_TYPE)])
    (row,) = json_path(body)
    assert repr([row]) == repr(typed_path(body))
    assert row["integral"] == 3 and type(row["integral"]) is int
    assert row["decimal"] == 12.5 and type(row["decimal"]) is float
    assert row["exponent"] == 1000 and type(row["exponent"]) is int
    assert row["zero"] == 0 and type(row["zero"]) is int
    assert row["flag"] is False and row["nothing"] is None
    assert row["blob"] == base64.b64encode(b"\x00\xffbytes").decode() and row["empty_blob"] == ""
    assert row["blobs"] == sorted(base64.b64encode(b).decode() for b in (b"b", b"a", b"\x01"))
    assert row["numbers"] == [-1, 10, 9.5]  # _plain sorts by str
    assert row["words"] == ["10", "9", "Zebra", "apple", "pear"]
    assert list(row) == list(EVERY_TYPE)  # the item's own order


@pytest.mark.parametrize("text", [
    "0", "-0", "+5", "007", "1E+3", "1e3", "1.0E2", "3.000", "-0.0", "12.50", "0.1", "1E-130", "-1E-130",
    "9.9999999999999999999999999999999999999E+125", "1" * 38, "+-1", "--1", "1.", ".5", "-.5", "1.2.3",
    "0.000", "-0.00100", "12345678901234567.25", "0.30000000000000001", "١٢", "-" + "9" * 38, "0." + "1" * 38,
    "123456789012345678901234567890.12345678", "1_000", " 12 ", "1" * 39, "1" + "0" * 40, "1E+400",
    "NaN", "Infinity", "abc", "",
])
def test_a_number_text_converts_or_fails_as_the_boto3_path_did(text):
    def outcome(convert):
        try:
            value = convert()
        except Exception as exc:  # the same failure, where the boto3 path failed
            return type(exc).__name__
        return repr(value)

    expected = outcome(lambda: _plain(TypeDeserializer().deserialize({"N": text})))
    assert outcome(lambda: plain_value({"N": text})) == expected
    assert outcome(lambda: plain_value({"NS": [text, "2"]})) == outcome(
        lambda: _plain(TypeDeserializer().deserialize({"NS": [text, "2"]})))


def test_what_is_no_attribute_value_is_refused_as_by_the_boto3_path():
    for value in ({"Q": "?"}, {}):
        with pytest.raises(TypeError):
            TypeDeserializer().deserialize(value)
        with pytest.raises(TypeError):
            plain_value(value)


def test_a_binary_becomes_base64_of_the_bytes_botocore_decodes():
    """botocore decodes the JSON's base64 (leniently); the row has canonical base64 of those bytes."""
    body = body_of([{"b": {"B": "AP8="}, "bs": {"BS": ["AP8=", "YQ=="]}}])
    assert json_path(body) == typed_path(body) == [{"b": "AP8=", "bs": ["AP8=", "YQ=="]}]


# -- any item ------------------------------------------------------------------------------------

digits = st.lists(st.integers(0, 9), min_size=1, max_size=38).map(tuple)


@st.composite
def number_texts(draw: Any) -> str:
    """Numbers DynamoDB can hold (38 significant digits, magnitude 1E-130 to 1E+126), in either notation."""
    number = Decimal((draw(st.integers(0, 1)), draw(digits), draw(st.integers(-140, 100))))
    if number and not -130 <= number.adjusted() <= 125:
        number = number.scaleb(-number.adjusted())
    text = str(number)
    if draw(st.booleans()) and abs(number.adjusted()) < 30:
        text = format(number, "f")  # 1.5E+3 and 1500
    return text


binaries = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode("ascii"))
scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text(max_size=12)),
    st.builds(lambda n: {"N": n}, number_texts()),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda b: {"B": b}, binaries),
    st.builds(lambda s: {"SS": sorted(s)}, st.sets(st.text(max_size=6), min_size=1, max_size=4)),
    st.builds(lambda s: {"NS": sorted(s)}, st.sets(number_texts(), min_size=1, max_size=4)),
    st.builds(lambda s: {"BS": sorted(s)}, st.sets(binaries, min_size=1, max_size=4)),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.builds(lambda v: {"L": v}, st.lists(inner, max_size=4)),
    st.builds(lambda v: {"M": v}, st.dictionaries(st.text(max_size=6), inner, max_size=4)),
), max_leaves=12)
items = st.dictionaries(st.text(min_size=1, max_size=8), values, min_size=1, max_size=8)


@settings(max_examples=250, deadline=None)
@given(st.lists(items, min_size=1, max_size=4))
def test_any_item_gives_exactly_the_rows_of_the_boto3_path(page):
    body = body_of(page)
    assert repr(json_path(body)) == repr(typed_path(body))
