"""CSV formula injection: csv cells that a spreadsheet would run are escaped; xlsx stays text.

The encoder's fast path (whole batches checked column by column in C) is
compared byte for byte with a plain per-cell reference, written here from
the rule alone, over many generated tables, delimiters and batch sizes.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from unittest import mock

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.config import Settings
from chalicelib.errors import ValidationError
from chalicelib.exporters import BuildContext, get_exporter
from chalicelib.formats import FORMATS, WriteOptions, base
from chalicelib.formats.options import OPTION_NAMES, write_options
from chalicelib.validation import parse_create

HOSTILE = '=HYPERLINK("http://evil","x")'

# -- the reference: the rule, cell by cell ------------------------------------------------------

#: OWASP's list: what a spreadsheet may run as a formula at the start of a cell.
RISKY = ("=", "+", "-", "@", "\t", "\r")
#: A plain decimal number, optionally signed: read as a number, never as a formula.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def reference_cell(value: Any, escape: bool) -> Any:
    """One cell as the rule says: ``_cell``'s conversion (tested in test_writers), then
    a quote before a text that starts with a risky character and is not a plain number.
    Numbers are never touched; any other value is judged by the text csv writes for it."""
    value = base._cell(value)
    if not escape or isinstance(value, (int, float, Decimal)):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(RISKY) and not NUMBER.fullmatch(text):
        return "'" + text
    return value


def reference_csv(columns: list[str], rows: list[Mapping[str, Any]], options: WriteOptions) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=options.delimiter, lineterminator="\r\n")
    writer.writerow([reference_cell(label, options.escape_formulas)
                     for label in options.header_row(columns)])
    for row in rows:
        writer.writerow([reference_cell(row.get(c), options.escape_formulas) for c in columns])
    return (base.UTF8_BOM if options.bom else b"") + out.getvalue().encode("utf-8")


def encode(columns: list[str], rows: list[Any], options: WriteOptions | None = None) -> bytes:
    counted: list[int] = []
    data = b"".join(base.encode_csv(columns, rows, counted.append, options or WriteOptions()))
    assert sum(counted) == len(rows)
    return data


def cells(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter))


class Shouting:
    """A value csv writes with ``str()``, whose text starts a formula."""

    def __str__(self) -> str:
        return "=CMD()"


# -- the rule ------------------------------------------------------------------------------------


def test_a_hyperlink_from_a_table_is_text_not_a_live_formula():
    data = encode(["id", "note"], [{"id": 1, "note": HOSTILE}, {"id": 2, "note": "fine"}])
    assert data.decode() == ('id,note\r\n1,"\'=HYPERLINK(""http://evil"",""x"")"\r\n'
                             "2,fine\r\n")
    assert cells(data)[1] == ["1", "'" + HOSTILE]


@pytest.mark.parametrize("value,written", [
    ("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-1+2", "'-1+2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tlead", "'\tlead"), ("\rlead", "'\rlead"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    # text that is a plain number cannot be a formula: left as it is
    ("-5", "-5"), ("+1.5", "+1.5"), ("-2e3", "-2e3"), ("-.5", "-.5"), ("-5.", "-5."),
    ("+1E+10", "+1E+10"), ("-0", "-0"),
    # ... but only a plain one
    ("-", "'-"), ("+", "'+"), ("-e5", "'-e5"), ("-1e", "'-1e"), ("- 5", "'- 5"), ("-5 ", "'-5 "),
    ("-inf", "'-inf"), ("-0x1F", "'-0x1F"), ("-1_000", "'-1_000"), ("-１", "'-１"), ("--5", "'--5"),
    # only the first character counts
    (" =1", " =1"), ("a=b", "a=b"), ("x\n=1", "x\n=1"), ("'=1", "'=1"), ("", ""), ("−5", "−5"),
    # numbers are never escaped, whatever their text
    (-5, "-5"), (-1.5, "-1.5"), (float("-inf"), "-inf"), (Decimal("-2"), "-2"),
    (Decimal("-Infinity"), "-Infinity"), (Decimal("-1E+5"), "-1E+5"),
    # converted values: json and true/false never start a formula
    (True, "true"), (None, ""), ({"a": "=x"}, '{"a": "=x"}'), (["=x"], '["=x"]'),
    # other values are judged by the text csv writes for them
    (date(2020, 1, 2), "2020-01-02"), (timedelta(days=-1), "'-1 day, 0:00:00"),
    (Shouting(), "'=CMD()"),
])
def test_the_escaping_rule_cell_by_cell(value, written):
    for rows in ([{"v": value}], [{"v": value}] * 3, [MappingProxyType({"v": value})]):
        assert [r[0] for r in cells(encode(["v"], rows))[1:]] == [written] * len(rows)


def test_header_labels_are_cells_too():
    columns = ["id", "@owner", "-5"]
    data = encode(columns, [{"id": 1, "@owner": "x", "-5": 2}],
                  WriteOptions(headers={"id": "=HYPERLINK(\"http://evil\")"}))
    assert cells(data)[0] == ["'=HYPERLINK(\"http://evil\")", "'@owner", "-5"]
    raw = encode(columns, [], WriteOptions(headers={"id": "=x"}, escape_formulas=False))
    assert cells(raw)[0] == ["=x", "@owner", "-5"]
    assert cells(encode([7, "=a"], [{7: "x", "=a": "y"}]))[0] == ["7", "'=a"]  # not a str: as before


def test_escape_formulas_false_writes_values_unchanged():
    rows = [{"a": HOSTILE, "b": "@x", "c": "\tt"}, {"a": "-1+2", "b": "+", "c": None}]
    raw = encode(["a", "b", "c"], rows, WriteOptions(escape_formulas=False))
    assert cells(raw)[1:] == [[HOSTILE, "@x", "\tt"], ["-1+2", "+", ""]]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", "-", "@"])
def test_escaping_follows_the_delimiter(delimiter):
    rows = [{"a": "=1", "b": "", "c": "-5", "d": "\tx"}, {"a": "ok", "b": None, "c": "x", "d": "y"}]
    data = encode(["a", "b", "c", "d"], rows, WriteOptions(delimiter=delimiter))
    assert cells(data, delimiter)[1:] == [["'=1", "", "-5", "'\tx"], ["ok", "", "x", "y"]]


def test_a_tab_delimiter_quotes_a_tab_led_cell_and_leaves_empty_cells_alone():
    data = encode(["a", "b", "c"], [{"a": "\tx", "b": None, "c": "z"}, {"a": "", "b": "", "c": ""}],
                  WriteOptions(delimiter="\t"))
    # csv quotes a cell holding the delimiter; two tabs in a row are an empty cell, not a risk
    assert data.decode().splitlines()[1:] == ['"\'\tx"\t\tz', "\t\t"]


def test_only_the_column_with_a_hostile_cell_of_that_batch_goes_cell_by_cell():
    rows = [{"id": i, "name": f"n{i}", "when": "2020-01-01"} for i in range(3 * base.BATCH_ROWS)]
    rows[base.BATCH_ROWS + 7]["name"] = HOSTILE
    slow = mock.Mock(wraps=base._guarded_cells)
    with mock.patch.object(base, "_guarded_cells", slow):
        data = encode(["id", "name", "when"], rows)
    # once: the "name" column of the second batch
    assert [list(c.args[0]) for c in slow.call_args_list] == [
        [r["name"] for r in rows[base.BATCH_ROWS:2 * base.BATCH_ROWS]]]
    parsed = cells(data)
    assert parsed[base.BATCH_ROWS + 8][1] == "'" + HOSTILE
    assert sum(cell.startswith("'") for row in parsed for cell in row) == 1
    assert data == reference_csv(["id", "name", "when"], rows, WriteOptions())


@pytest.mark.parametrize("rows", [
    pytest.param(lambda: list(get_exporter("demo")._rows(5000, 3)), id="demo rows"),
    pytest.param(lambda: [{k: v for k, v in r.items() if k != "city" or r["id"] % 3}
                          for r in get_exporter("demo")._rows(5000, 3)], id="sparse demo rows"),
    pytest.param(lambda: [{"n": -i, "x": -i / 3, "d": Decimal(-i), "t": datetime(2020, 1, 1, tzinfo=UTC),
                           "s": None if i % 2 else "safe"} for i in range(5000)], id="negative numbers"),
])
def test_common_batches_take_no_per_cell_path(rows):
    """The performance promise: with nothing to escape, no Python runs per cell."""
    rows = rows()
    columns = list(rows[0])
    with mock.patch.object(base, "_guarded_cells", side_effect=AssertionError("per-cell path")):
        data = encode(columns, rows)
    assert data == reference_csv(columns, rows, WriteOptions())


# -- the fast path against the reference ----------------------------------------------------------

RISKY_TEXT = st.one_of(
    st.text(max_size=6),
    st.builds(str.__add__, st.sampled_from(RISKY), st.text(max_size=5)),
    st.sampled_from(["-5", "+1.5", "-2e3", "-.5", "5.", "-", "+", "-e5", "- 5", "-5 ", "-inf",
                     HOSTILE, "@SUM(A1)", "-1+2", "", " =1", "\x00=1", "a\x00-b", "\x00", "x,-y"]),
)
SAFE_TEXT = st.text(st.characters(min_codepoint=65, blacklist_categories=("Cs",)), max_size=6)
ANY = st.one_of(RISKY_TEXT, st.integers(), st.floats(), st.decimals(), st.booleans(), st.none(),
                st.dates(), st.builds(timedelta, st.integers(-3, 3)), st.just(Shouting()),
                st.lists(RISKY_TEXT, max_size=2), st.dictionaries(RISKY_TEXT, st.integers(), max_size=2),
                st.binary(max_size=3))
#: each column holds one kind of value, as real tables do, so most batches can take the fast path
KINDS = [RISKY_TEXT, SAFE_TEXT, st.integers(), st.floats(), st.decimals(), st.dates(),
         st.datetimes(), st.times(), st.sampled_from(["-5", "+1.5", "-2e3", "7"]), ANY,
         st.one_of(SAFE_TEXT, st.floats(), st.integers()), st.one_of(RISKY_TEXT, st.booleans())]
NAMES = st.sampled_from(["id", "name", "=cmd", "-5", "@x", "a b", "Név", "\tt"])
DELIMITERS = st.sampled_from([",", ";", "\t", "|", "-", "=", "@", "+", ".", "e", "5", " ", "§", "；"])


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[Mapping[str, Any]]]:
    columns = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    kinds = {c: draw(st.sampled_from(KINDS)) for c in columns}
    rows: list[Mapping[str, Any]] = []
    for _ in range(draw(st.integers(0, 12))):
        row = {c: draw(st.one_of(kinds[c], st.none())) if draw(st.integers(0, 9)) else None
               for c in columns if draw(st.integers(0, 11))}  # now and then a column is missing
        other = draw(st.integers(0, 29))  # now and then a mapping that is not a plain dict
        rows.append(MappingProxyType(row) if other == 0 else defaultdict(lambda: "=dflt", row)
                    if other == 1 else row)
    return columns, rows


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables(), delimiter=DELIMITERS, batch=st.integers(1, 5), escape=st.booleans(),
       bom=st.booleans(), labels=st.dictionaries(NAMES, RISKY_TEXT.filter(bool), max_size=2))
def test_encoder_matches_the_per_cell_reference(table, delimiter, batch, escape, bom, labels):
    columns, rows = table
    options = WriteOptions(delimiter=delimiter, bom=bom, headers=labels, escape_formulas=escape)
    with mock.patch.object(base, "BATCH_ROWS", batch):
        assert encode(columns, rows, options) == reference_csv(columns, rows, options)


# -- the option --------------------------------------------------------------------------------


def create(fmt: str, **params: Any) -> Any:
    return parse_create({"task_name": "t", "kind": "demo", "format": fmt, "params": params})


def test_escape_formulas_is_a_published_csv_option_on_by_default():
    assert "escape_formulas" in OPTION_NAMES
    schema = get_exporter("dynamodb_table").params_schema["properties"]["escape_formulas"]
    assert schema["type"] == "boolean"
    assert write_options({}).escape_formulas is True
    assert write_options({"escape_formulas": False}).escape_formulas is False
    assert create("csv", escape_formulas=False).params["escape_formulas"] is False
    assert "escape_formulas" not in create("csv").params  # the default is not stored


@pytest.mark.parametrize("fmt", ["jsonl", "xlsx"])
@pytest.mark.parametrize("value", [True, False])
def test_escape_formulas_is_refused_for_formats_without_formulas_in_text(fmt, value):
    with pytest.raises(ValidationError) as exc:
        create(fmt, escape_formulas=value)
    assert exc.value.status == 400
    assert [d["field"] for d in exc.value.details] == ["params.escape_formulas"]
    assert "only to csv" in exc.value.details[0]["issue"]


def test_escape_formulas_must_be_a_boolean():
    with pytest.raises(ValidationError) as exc:
        create("csv", escape_formulas="no")
    assert exc.value.details[0]["field"] == "params.escape_formulas"


def test_the_exporter_passes_the_option_to_the_writer():
    demo = get_exporter("demo")
    ctx = BuildContext(Settings())

    def stream(**params: Any) -> list[list[str]]:
        with mock.patch.object(type(demo), "_rows", staticmethod(lambda n, seed: iter(
                [{"id": 1, "name": HOSTILE, "email": "-x", "city": "@c", "amount": -1.5,
                  "signup_date": "2020-01-01"}]))):
            return cells(b"".join(demo.stream({"rows": 1} | params, "csv", ctx)))

    assert stream()[1] == ["1", "'" + HOSTILE, "'-x", "'@c", "-1.5", "2020-01-01"]
    assert stream(escape_formulas=False)[1] == ["1", HOSTILE, "-x", "@c", "-1.5", "2020-01-01"]


# -- xlsx: strings are written as strings ------------------------------------------------------------

XLSX_HOSTILE = [HOSTILE, "+1", "@SUM(A1)", "-1+2", "=1+1", "-5"]


def xlsx_bytes(rows: list[dict[str, Any]], options: WriteOptions) -> bytes:
    return b"".join(FORMATS["xlsx"].encode(["v", "n"], rows, lambda n: None, options))


def test_xlsx_writes_formula_like_strings_as_string_cells():
    rows = [{"v": v, "n": i} for i, v in enumerate(XLSX_HOSTILE)]
    data = xlsx_bytes(rows, WriteOptions(headers={"v": "=HEADER()"}))
    book = openpyxl.load_workbook(io.BytesIO(data))  # not read-only: it keeps data_type
    sheet = book["data"]
    got = [(c.value, c.data_type) for c in sheet["A"]]
    # text as it is, with no added quote, and typed as a string, not a formula ("f")
    assert got == [("=HEADER()", "s")] + [(v, "s") for v in XLSX_HOSTILE]
    assert [c.data_type for c in sheet["B"][1:]] == ["n"] * len(XLSX_HOSTILE)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert "<f>" not in xml and "<f " not in xml
    assert 'HYPERLINK("http://evil","x")' in xml.replace("&quot;", '"')
