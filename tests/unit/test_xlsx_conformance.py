"""The streamed xlsx writer, read back by openpyxl (and zipfile and an XML parser).

What a cell becomes is what the seed's XlsxWriter writer made of it, checked
here value by value: numbers, booleans and text as such; integers of 16
digits or more, non-finite numbers, dates and other values as text; strings
that look like formulas stay strings. Each value goes through the writer
three ways, since it takes a different path for each: in a column of that
value alone (checked and escaped a column at a time), in a column where it
alternates with empty cells, and in a column of mixed types (one cell at a
time). Text that XML cannot hold uses Excel's ``_xHHHH_`` escape, which
openpyxl does not decode: ``excel_text`` decodes it as Excel does.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from xml.etree import ElementTree

import openpyxl
import pytest

from chalicelib.formats import FORMATS, WriteOptions
from chalicelib.formats import xlsx as xlsx_module

MAX_ROWS = 1_048_576


def build(columns: list[str], rows: Any, options: WriteOptions | None = None) -> bytes:
    counted: list[int] = []
    data = b"".join(FORMATS["xlsx"].encode(columns, rows, counted.append, options or WriteOptions()))
    if isinstance(rows, list):
        assert sum(counted) == len(rows)
    return data


def workbook(data: bytes) -> openpyxl.Workbook:
    """The whole workbook (not read-only: cells keep their data_type and font)."""
    check_container(data)
    return openpyxl.load_workbook(io.BytesIO(data))


def check_container(data: bytes) -> None:
    """A sound zip (every CRC matches) whose every part is well-formed XML."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        for name in archive.namelist():
            ElementTree.fromstring(archive.read(name))  # raises on a character XML cannot hold


_EXCEL_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def excel_text(text: Any) -> Any:
    """A cell's text as Excel shows it: every ``_xHHHH_`` becomes its character."""
    if not isinstance(text, str):
        return text
    return _EXCEL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def cells(data: bytes, column: str = "A") -> list[tuple[Any, str]]:
    """(value, data_type) of a column's data cells on the first sheet."""
    sheet = workbook(data)["data"]
    return [(c.value, c.data_type) for c in sheet[column][1:]]


# -- types ------------------------------------------------------------------------------------

#: (value, what openpyxl reads, its data_type: n number, s string, b boolean)
TYPED: list[tuple[Any, Any, str]] = [
    (0, 0, "n"),
    (-7, -7, "n"),
    (999_999_999_999_999, 999_999_999_999_999, "n"),  # 15 digits: exact in Excel
    (-999_999_999_999_999, -999_999_999_999_999, "n"),
    (10**15, "1000000000000000", "s"),  # 16 digits would lose precision: text
    (-(10**15), "-1000000000000000", "s"),
    (12345678901234567890, "12345678901234567890", "s"),
    (2**63, "9223372036854775808", "s"),
    (1.5, 1.5, "n"),
    (0.1 + 0.2, 0.30000000000000004, "n"),  # every digit kept: the shortest exact repr
    (1e-07, 1e-07, "n"),
    (-2.5e300, -2.5e300, "n"),
    (1e20, 1e20, "n"),  # a float is a number at any size
    (float("nan"), "nan", "s"),
    (float("inf"), "inf", "s"),
    (float("-inf"), "-inf", "s"),
    (True, True, "b"),
    (False, False, "b"),
    (Decimal("2.25"), 2.25, "n"),
    (Decimal("-0.5"), -0.5, "n"),
    (Decimal("123456789012345"), 123456789012345, "n"),
    (Decimal("1234567890123456"), "1234567890123456", "s"),
    (Decimal("0.1234567890123456"), "0.1234567890123456", "s"),
    (Decimal("1E+400"), "1E+400", "s"),
    (Decimal("NaN"), "NaN", "s"),
    ("", "", "s"),
    ("text", "text", "s"),
    ("0042", "0042", "s"),  # digits in text stay text
    ("1.5", "1.5", "s"),
    (" padded ", " padded ", "s"),  # xml:space keeps the spaces
    ("\tlead", "\tlead", "s"),
    ("trail\n", "trail\n", "s"),
    ("two\nlines", "two\nlines", "s"),
    ("\u3000ideographic space\u3000", "\u3000ideographic space\u3000", "s"),
    ("a & b < c > d \"q\" 'a'", "a & b < c > d \"q\" 'a'", "s"),
    ("<r>x</r>", "<r>x</r>", "s"),  # XlsxWriter wrote this raw, as a rich string, and lost it
    ("{0} {} {{", "{0} {} {{", "s"),  # braces are data, not a format
    ({"k": "ü"}, '{"k": "ü"}', "s"),
    ([1, 2], "[1, 2]", "s"),
    (date(2026, 1, 2), "2026-01-02", "s"),  # dates are written as their text, as before
    (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05", "s"),
    (datetime(2026, 1, 2, tzinfo=UTC), "2026-01-02 00:00:00+00:00", "s"),
    (time(1, 2, 3), "01:02:03", "s"),
]


@pytest.mark.parametrize(("value", "expected", "kind"), TYPED, ids=[repr(v)[:40] for v, _, _ in TYPED])
def test_a_value_reads_back_the_same_in_every_kind_of_column(value, expected, kind):
    rows = [{"same": value, "gappy": value}, {"same": value, "gappy": None}, {"same": value, "gappy": value}]
    data = build(["same", "gappy"], rows)
    expected_cell = (expected, kind)
    assert cells(data, "A") == [expected_cell] * 3
    assert cells(data, "B") == [expected_cell, (None, "n"), expected_cell]
    if isinstance(expected, float):  # exactly, not approximately
        assert all(repr(v) == repr(expected) for v, _ in cells(data, "A"))


def test_a_column_of_mixed_types_reads_back_cell_by_cell():
    rows = [{"v": value} for value, _, _ in TYPED] + [{"v": None}, {}]
    got = cells(build(["v"], rows))
    assert got == [(expected, kind) for _, expected, kind in TYPED] + [(None, "n"), (None, "n")]


def test_rows_of_any_mapping_give_the_same_bytes_as_dicts():
    rows = [{"a": value, "b": str(i)} for i, (value, _, _) in enumerate(TYPED)]
    assert build(["a", "b"], [MappingProxyType(r) for r in rows]) == build(["a", "b"], rows)


def test_the_same_rows_give_the_same_bytes():
    rows = [{"a": i, "b": f"Zoë {i}"} for i in range(5000)]
    assert build(["a", "b"], rows) == build(["a", "b"], rows)


# -- formulas ---------------------------------------------------------------------------------

FORMULA_LIKE = ["=1+1", "+x", "-x", "@x", '=HYPERLINK("http://evil","x")', "-5", "+1.5", "=", "@",
                "\tcmd", "\rcmd", "=SUM(A1:A2)"]


@pytest.mark.parametrize("layout", ["uniform", "gappy", "mixed"])
def test_strings_that_look_like_formulas_stay_strings(layout):
    values: list[Any] = list(FORMULA_LIKE)
    if layout == "gappy":
        values = [v for text in FORMULA_LIKE for v in (None, text)]
    elif layout == "mixed":
        values = [v for text in FORMULA_LIKE for v in (text, 1)]
    data = build(["v"], [{"v": v} for v in values],
                 WriteOptions(headers={"v": "=HEADER()"}))
    sheet = workbook(data)["data"]
    assert (sheet["A1"].value, sheet["A1"].data_type) == ("=HEADER()", "s")
    got = [(excel_text(c.value), c.data_type) for c in sheet["A"][1:]]
    assert got == [(v, "s") if isinstance(v, str) else (v, "n") for v in values]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert "<f>" not in xml and "<f " not in xml


def test_the_formula_escape_option_leaves_xlsx_as_it_is():
    """escape_formulas is csv's: xlsx is refused it at creation and its writer ignores it."""
    rows = [{"v": v} for v in FORMULA_LIKE]
    escaped = build(["v"], rows, WriteOptions(escape_formulas=True))
    assert escaped == build(["v"], rows, WriteOptions(escape_formulas=False))
    assert [excel_text(v) for v, _ in cells(escaped)] == FORMULA_LIKE  # no quote added


# -- text: UTF-8, control characters, length ---------------------------------------------------

UTF8 = ["王, Zoë, Ærin", "用户 列表", "😀 emoji 👍🏽 and 𝄞", "עברית", "e\u0301 combining", "\xa0nbsp\xa0",
        "Дмитриев", "\u200bzero width", "\U0010fffd last plane"]
#: Characters XML 1.0 cannot hold, or that a parser would change, or UTF-8 cannot encode,
#: and literal escapes that Excel would otherwise decode.
AWKWARD = ([f"a{chr(c)}b" for c in range(0x20)] + [chr(c) for c in range(0x20)]
           + ["\x7f del", "\x85 nel", "\ufffe", "\uffff", "x\ud800y", "\udfff", "\ud83d\ude00 a split pair",
              "_x0041_", "_x005F_", "A_x00E9_b", "_x004", "_X0041_", "_x0041_\x01_x0041_", "\r\n"])


@pytest.mark.parametrize("layout", ["uniform", "gappy", "mixed"])
@pytest.mark.parametrize("texts", [UTF8, AWKWARD], ids=["utf8", "awkward"])
def test_text_reads_back_as_written(texts, layout):
    values: list[Any] = list(texts)
    if layout == "gappy":
        values = [v for text in texts for v in (None, text)]
    elif layout == "mixed":
        values = [v for text in texts for v in (text, 2.5)]
    data = build(["v"], [{"v": v} for v in values], WriteOptions(headers={"v": "名前 & <label>"}))
    sheet = workbook(data)["data"]
    assert sheet["A1"].value == "名前 & <label>"
    assert [excel_text(c.value) for c in sheet["A"][1:]] == values


def test_tabs_and_newlines_stay_as_they_are_other_controls_use_the_escape():
    data = build(["v"], [{"v": "tab\tnew\nline\x01\x1f\rend"}])
    assert cells(data) == [("tab\tnew\nline_x0001__x001F__x000D_end", "s")]


@pytest.mark.parametrize(("text", "expected"), [
    ("x" * 32_767, "x" * 32_767),
    ("x" * 40_000, "x" * 32_767),  # Excel's limit on a cell
    ("😀" * 20_000, "😀" * 16_383),  # counted in UTF-16 units; a pair is never split
    ("a" + "😀" * 20_000, "a" + "😀" * 16_383),
    ("\x01" * 40_000, "\x01" * 32_767),  # counted before the escape, as Excel counts
])
def test_long_text_is_cut_at_excels_limit(text, expected):
    for rows in ([{"v": text}], [{"v": text}, {"v": "short"}], [{"v": text}, {"v": 1}]):
        assert excel_text(cells(build(["v"], rows))[0][0]) == expected


# -- header, labels, sheets -------------------------------------------------------------------


def test_header_row_has_the_labels_in_bold_and_stays_frozen_on_every_sheet():
    labels = {"id": "№", "name": "名前 & <b>", "unknown": "ignored"}
    rows = [{"id": i, "name": f"Zoë {i}", "city": None} for i in range(1, 8)]
    data = build(["id", "name", "city"], rows, WriteOptions(headers=labels, sheet_rows=4))
    book = workbook(data)
    assert book.sheetnames == ["data", "data (2)", "data (3)"]
    for sheet in book.worksheets:
        assert [c.value for c in sheet[1]] == ["№", "名前 & <b>", "city"]
        assert all(c.font.b for c in sheet[1])
        assert not any(c.font.b for row in sheet.iter_rows(min_row=2) for c in row)
        assert sheet.freeze_panes == "A2"
    got = [[c.value for c in row] for sheet in book.worksheets for row in sheet.iter_rows(min_row=2)]
    assert got == [[i, f"Zoë {i}", None] for i in range(1, 8)]


def test_an_export_without_rows_or_columns_is_still_a_workbook():
    assert [c.value for c in workbook(build(["id", "name"], []))["data"][1]] == ["id", "name"]
    book = workbook(build([], [{}, {}]))
    assert book.sheetnames == ["data"] and book["data"].max_column == 1


def test_cell_references_follow_excels_column_letters():
    columns = [f"c{i}" for i in range(30)]
    data = build(columns, [{c: i for i, c in enumerate(columns)}])
    sheet = workbook(data)["data"]
    assert sheet["Z2"].value == 25 and sheet["AA2"].value == 26 and sheet["AD2"].value == 29
    assert [xlsx_module.column_letters(i) for i in (0, 25, 26, 701, 702, 16_383)] == [
        "A", "Z", "AA", "ZZ", "AAA", "XFD"]


@pytest.mark.slow
def test_past_1048576_rows_a_new_sheet_starts():
    """Excel's real limit: a header and 1,048,575 rows on the first sheet, the rest on the next."""
    total = MAX_ROWS - 1 + 3

    def rows() -> Iterator[dict[str, int]]:
        return ({"n": i} for i in range(1, total + 1))

    data = b"".join(FORMATS["xlsx"].encode(["n"], rows(), lambda n: None))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        first = archive.read("xl/worksheets/sheet1.xml").decode("utf-8")
    # the first sheet read as text: openpyxl would take far longer over a million rows
    assert first.count("<row ") == MAX_ROWS
    assert f'<row r="{MAX_ROWS}"><c r="A{MAX_ROWS}"><v>{MAX_ROWS - 1}</v></c></row></sheetData>' in first
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    try:
        assert book.sheetnames == ["data", "data (2)"]
        assert list(book["data (2)"].iter_rows(values_only=True)) == [
            ("n",), (MAX_ROWS,), (MAX_ROWS + 1,), (MAX_ROWS + 2,)]
    finally:
        book.close()


# -- the zip ----------------------------------------------------------------------------------


def test_the_zip_has_the_parts_of_a_workbook_and_no_zip64_records():
    data = build(["a"], [{"a": i} for i in range(10)], WriteOptions(sheet_rows=6))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        content_types = archive.read("[Content_Types].xml").decode()
        infos = archive.infolist()
    assert names[:2] == ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"]
    assert {"xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml", "_rels/.rels",
            "[Content_Types].xml"} <= set(names)
    assert all(f"/xl/worksheets/sheet{n}.xml" in content_types for n in (1, 2))
    assert all(i.compress_type == zipfile.ZIP_DEFLATED and i.extra == b"" for i in infos)
    assert b"PK\x06\x06" not in data  # no ZIP64 end record in a small file


def test_zip64_fields_read_back_where_sizes_need_them(monkeypatch):
    """The thresholds lowered, so that a small file takes the >4 GiB path: sizes, offsets, counts."""
    monkeypatch.setattr(xlsx_module, "ZIP64_SIZE", 1000)
    monkeypatch.setattr(xlsx_module, "ZIP64_COUNT", 3)
    rows = [{"a": i, "b": f"Zoë {i}" * 5} for i in range(3000)]
    data = build(["a", "b"], rows, WriteOptions(sheet_rows=2000))
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # the ZIP64 end record and its locator
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet = archive.getinfo("xl/worksheets/sheet2.xml")
        assert sheet.file_size > 1000 and sheet.header_offset > 1000 and sheet.extra[:2] == b"\x01\x00"
    book = workbook(data)
    assert book.sheetnames == ["data", "data (2)"]
    assert [r[0].value for s in book.worksheets for r in s.iter_rows(min_row=2)] == list(range(3000))
