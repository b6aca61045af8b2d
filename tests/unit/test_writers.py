"""Shared writers and output options, each output read back by an independent reader.

csv module, json, openpyxl and gzip read what the writers produce; nothing
here needs AWS.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import openpyxl
import pytest

from chalicelib.config import Settings
from chalicelib.errors import ValidationError
from chalicelib.exporters import BuildContext, RowExporter, get_exporter
from chalicelib.formats import FORMATS, WriteOptions
from chalicelib.formats import xlsx as xlsx_module
from chalicelib.formats.base import BATCH_ROWS, UTF8_BOM
from chalicelib.formats.compression import gzip_chunks
from chalicelib.formats.options import OPTION_NAMES
from chalicelib.validation import final_file_name, parse_create

COLUMNS = ["id", "name", "city"]
ROWS = [{"id": 1, "name": "Zoë 王", "city": "München; Süd"},
        {"id": 2, "name": 'say "hi"', "city": "São Paulo\tBR"},
        {"id": 3, "name": "Дмитриев", "city": None}]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def encode(fmt: str, columns: list[str], rows: Any, options: WriteOptions | None = None) -> bytes:
    counted: list[int] = []
    data = b"".join(FORMATS[fmt].encode(columns, rows, counted.append, options or WriteOptions()))
    assert sum(counted) == len(rows)
    return data


def read_xlsx(data: bytes) -> dict[str, list[tuple[Any, ...]]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    try:
        return {name: list(book[name].iter_rows(values_only=True)) for name in book.sheetnames}
    finally:
        book.close()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The writers' temp dir, so a test can see they leave nothing behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


# -- csv --------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_delimiter_is_read_back_by_the_csv_module(delimiter):
    data = encode("csv", COLUMNS, ROWS, WriteOptions(delimiter=delimiter))
    text = data.decode("utf-8")
    assert text.splitlines()[0] == delimiter.join(COLUMNS)
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    assert parsed[1:] == [["1", "Zoë 王", "München; Süd"], ["2", 'say "hi"', "São Paulo\tBR"],
                          ["3", "Дмитриев", ""]]


def test_csv_bom_present_only_when_asked():
    with_bom = encode("csv", COLUMNS, ROWS, WriteOptions(bom=True))
    without = encode("csv", COLUMNS, ROWS)
    assert with_bom.startswith(UTF8_BOM) and with_bom.count(UTF8_BOM) == 1
    assert not without.startswith(UTF8_BOM)
    assert with_bom[len(UTF8_BOM):] == without
    rows = list(csv.DictReader(io.StringIO(with_bom.decode("utf-8-sig"), newline="")))
    assert rows[0]["id"] == "1" and rows[0]["name"] == "Zoë 王"  # the first key is clean


def test_csv_bom_on_an_empty_export_and_across_batches():
    assert encode("csv", ["id"], [], WriteOptions(bom=True)) == UTF8_BOM + b"id\r\n"
    rows = [{"id": i} for i in range(BATCH_ROWS * 2 + 5)]
    data = encode("csv", ["id"], rows, WriteOptions(bom=True))
    assert data.count(UTF8_BOM) == 1
    assert len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))) == len(rows) + 1


def test_csv_header_labels_replace_only_the_header_row():
    labels = {"name": "Имя / 名前", "city": "City, town"}
    data = encode("csv", COLUMNS, ROWS, WriteOptions(headers=labels | {"unknown": "ignored"}))
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert parsed[0] == ["id", "Имя / 名前", "City, town"]
    assert parsed[1] == ["1", "Zoë 王", "München; Süd"]


def test_jsonl_keys_stay_column_names_whatever_the_labels():
    data = encode("jsonl", COLUMNS, ROWS, WriteOptions(headers={"name": "Name"}))
    objects = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert objects[0] == {"id": 1, "name": "Zoë 王", "city": "München; Süd"}


# -- xlsx -------------------------------------------------------------------------------------


def test_xlsx_roundtrip_with_types_and_non_ascii(private_tmp):
    rows = [
        {"a": "王, Zoë, Ærin", "b": 1.5, "c": True, "d": {"k": "ü"}, "e": 12345678901234567890},
        {"a": "=1+1", "b": -7, "c": False, "d": [1, 2], "e": Decimal("2.25")},
        {"a": "tab\tand\x01ctl", "b": None, "c": None, "d": "", "e": datetime(2026, 1, 2, tzinfo=UTC)},
        {"a": "https://example.com/ü", "b": float("nan"), "c": "0042", "d": None, "e": Decimal("1e400")},
        {"a": "x" * 40_000, "b": float("-inf"), "c": 10**15, "d": Decimal("NaN"), "e": Decimal("-0.5")},
    ]
    data = encode("xlsx", ["a", "b", "c", "d", "e"], rows, WriteOptions(headers={"a": "Név 名"}))
    assert data[:2] == b"PK"
    sheets = read_xlsx(data)
    assert list(sheets) == ["data"]
    got = sheets["data"]
    assert got[0] == ("Név 名", "b", "c", "d", "e")
    assert got[1] == ("王, Zoë, Ærin", 1.5, True, '{"k": "ü"}', "12345678901234567890")
    assert got[2] == ("=1+1", -7, False, "[1, 2]", 2.25)  # a formula-like string stays text
    # control characters use the format's _xHHHH_ escape, which Excel decodes (openpyxl does not)
    assert got[3][:4] == ("tab\tand_x0001_ctl", None, None, "")
    assert got[3][4] == "2026-01-02 00:00:00+00:00"
    assert got[4] == ("https://example.com/ü", "nan", "0042", None, "1E+400")
    assert got[5] == ("x" * 32_767, "-inf", "1000000000000000", "NaN", -0.5)  # Excel's cell limit
    assert os.listdir(private_tmp) == []


def test_xlsx_rolls_over_to_a_new_sheet_with_the_header_repeated(private_tmp):
    rows = [{"id": i, "name": f"Zoë {i}"} for i in range(1, 11)]
    data = encode("xlsx", ["id", "name"], rows, WriteOptions(sheet_rows=4, headers={"id": "№"}))
    sheets = read_xlsx(data)
    assert list(sheets) == ["data", "data (2)", "data (3)", "data (4)"]
    assert all(len(s) <= 4 and s[0] == ("№", "name") for s in sheets.values())
    assert [r for s in sheets.values() for r in s[1:]] == [(i, f"Zoë {i}") for i in range(1, 11)]
    assert os.listdir(private_tmp) == []


def test_xlsx_exact_fill_opens_no_empty_sheet():
    rows = [{"id": i} for i in range(6)]
    sheets = read_xlsx(encode("xlsx", ["id"], rows, WriteOptions(sheet_rows=4)))
    assert [len(s) for s in sheets.values()] == [4, 4]


def test_xlsx_default_limit_is_excels_and_is_overridable(monkeypatch):
    assert xlsx_module.MAX_SHEET_ROWS == 1_048_576
    monkeypatch.setattr(xlsx_module, "MAX_SHEET_ROWS", 3)
    sheets = read_xlsx(encode("xlsx", ["id"], [{"id": i} for i in range(5)]))
    assert [len(s) for s in sheets.values()] == [3, 3, 2]  # header + 2, 2, 1
    with pytest.raises(ValueError):
        list(FORMATS["xlsx"].encode(["id"], [], lambda n: None, WriteOptions(sheet_rows=1)))


def test_xlsx_without_rows_still_has_its_header():
    assert read_xlsx(encode("xlsx", ["id", "name"], [])) == {"data": [("id", "name")]}


def test_xlsx_yields_a_chunk_per_batch_so_the_worker_can_check_cancel(private_tmp):
    pulled = 0

    def rows() -> Iterator[dict[str, int]]:
        nonlocal pulled
        for i in range(BATCH_ROWS * 3):
            pulled += 1
            yield {"id": i}

    counted: list[int] = []
    seen: list[tuple[int, int]] = []  # (rows pulled, rows counted) as each chunk comes out
    chunks = []
    for chunk in FORMATS["xlsx"].encode(["id"], rows(), counted.append):
        chunks.append(chunk)
        seen.append((pulled, sum(counted)))
    assert counted == [BATCH_ROWS] * 3
    # one chunk a batch (deflate may keep it back: then it is empty), never more than a
    # batch read ahead of what is written: the worker gets control back every batch
    assert [c for _, c in seen[1:4]] == [BATCH_ROWS, 2 * BATCH_ROWS, 3 * BATCH_ROWS]
    assert all(p - c <= BATCH_ROWS for p, c in seen)
    assert len(read_xlsx(b"".join(chunks))["data"]) == BATCH_ROWS * 3 + 1


def test_xlsx_reads_fewer_rows_a_batch_when_they_are_wide(monkeypatch):
    monkeypatch.setattr(xlsx_module, "BATCH_CELLS", 100)
    columns = [f"c{i}" for i in range(30)]
    rows = [{c: i for c in columns} for i in range(50)]
    counted: list[int] = []
    chunks = list(FORMATS["xlsx"].encode(columns, rows, counted.append))
    assert counted == [3] * 16 + [2]  # 100 cells: 3 rows of 30 a batch
    assert read_xlsx(b"".join(chunks))["data"][1:] == [(i,) * 30 for i in range(50)]


def test_xlsx_bytes_leave_as_the_rows_are_written():
    """Streamed: most of the file has left before the last row is read (no temp file to fill first)."""
    total = 20 * BATCH_ROWS
    pulled = 0

    def rows() -> Iterator[dict[str, str]]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield {"h": hashlib.sha256(str(i).encode()).hexdigest()}  # text that hardly compresses

    sizes = [(len(chunk), pulled) for chunk in FORMATS["xlsx"].encode(["h"], rows(), lambda n: None)]
    size = sum(n for n, _ in sizes)
    before_last_batch = sum(n for n, p in sizes if p <= total - BATCH_ROWS)
    assert before_last_batch > size * 0.8
    assert max(n for n, _ in sizes) < size / 10  # no chunk is the whole file


def test_xlsx_writes_no_temp_files(private_tmp):
    gen = FORMATS["xlsx"].encode(["id"], ({"id": i} for i in range(10 * BATCH_ROWS)),
                                 lambda n: None)
    next(gen)
    next(gen)
    assert os.listdir(private_tmp) == []
    gen.close()  # what a cancel or a time-out does to the generator
    assert os.listdir(private_tmp) == []


def test_xlsx_source_failure_propagates(private_tmp):
    def rows() -> Iterator[dict[str, int]]:
        yield from ({"id": i} for i in range(BATCH_ROWS + 1))
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        b"".join(FORMATS["xlsx"].encode(["id"], rows(), lambda n: None))
    assert os.listdir(private_tmp) == []


def test_xlsx_refuses_more_columns_than_a_sheet_holds():
    from chalicelib.errors import ExportError

    columns = [f"c{i}" for i in range(xlsx_module.MAX_COLUMNS + 1)]
    with pytest.raises(ExportError) as exc:
        next(FORMATS["xlsx"].encode(columns, [], lambda n: None))
    assert exc.value.code == "too_many_columns"


# -- gzip -------------------------------------------------------------------------------------


def test_gzip_stream_decompresses_to_the_input_and_streams():
    parts = [os.urandom(64 * 1024) for _ in range(8)]
    out = list(gzip_chunks(iter(parts)))
    assert len(out) == len(parts) + 1
    assert sum(1 for c in out[:-1] if c) >= 4  # bytes leave as they come, not all at the end
    assert gzip.decompress(b"".join(out)) == b"".join(parts)
    assert gzip.decompress(b"".join(gzip_chunks([]))) == b""


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_row_exporter_gzip_output_is_the_plain_output_compressed(fmt):
    demo = get_exporter("demo")
    params = {"rows": 5000, "seed": 4}
    plain = b"".join(demo.stream(params, fmt, BuildContext(Settings())))
    ctx = BuildContext(Settings())
    packed = b"".join(demo.stream(params | {"compression": "gzip"}, fmt, ctx))
    assert packed[:2] == b"\x1f\x8b" and len(packed) < len(plain) // 2
    assert gzip.decompress(packed) == plain and ctx.rows == 5000
    with gzip.open(io.BytesIO(packed), "rt", encoding="utf-8", newline="") as text:
        if fmt == "csv":
            assert len(list(csv.DictReader(text))) == 5000
        else:
            assert [json.loads(line)["id"] for line in text][-1] == 5000


def test_csv_options_combine_through_the_exporter():
    demo = get_exporter("demo")
    params = {"rows": 20, "delimiter": ";", "bom": True, "headers": {"name": "Név"},
              "compression": "gzip"}
    data = gzip.decompress(b"".join(demo.stream(params, "csv", BuildContext(Settings()))))
    assert data.startswith(UTF8_BOM)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert len(rows) == 20 and "Név" in rows[0] and "name" not in rows[0]


def test_demo_xlsx_through_the_exporter_with_a_lowered_sheet_limit(private_tmp):
    demo = get_exporter("demo")
    ctx = BuildContext(Settings(), sheet_rows=1001)
    data = b"".join(demo.stream({"rows": 2500, "headers": {"email": "E-mail"}}, "xlsx", ctx))
    sheets = read_xlsx(data)
    assert list(sheets) == ["data", "data (2)", "data (3)"] and ctx.rows == 2500
    assert sheets["data (3)"][0] == ("id", "name", "E-mail", "city", "amount", "signup_date")
    assert sheets["data (3)"][-1][0] == 2500
    assert any(any(ord(ch) > 127 for ch in row[1]) for row in sheets["data"][1:])
    assert os.listdir(private_tmp) == []


# -- output, options, validation ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["demo", "dynamodb_table"])
def test_row_kinds_offer_xlsx_and_publish_the_options(kind):
    exporter = get_exporter(kind)
    assert exporter.formats[:3] == ("csv", "jsonl", "xlsx")
    assert set(exporter.params_schema["properties"]) >= OPTION_NAMES
    assert exporter.params_schema["properties"]["compression"]["enum"] == ["none", "gzip"]


def test_output_decides_extension_and_content_type_together():
    demo = get_exporter("demo")
    assert demo.output({}, "csv") == (".csv", "text/csv; charset=utf-8")
    assert demo.output({"compression": "gzip"}, "csv") == (".csv.gz", "application/gzip")
    assert demo.output({"compression": "gzip"}, "jsonl") == (".jsonl.gz", "application/gzip")
    assert demo.output({"compression": "none"}, "jsonl").extension == ".jsonl"
    assert demo.output({}, "xlsx") == (".xlsx", XLSX_TYPE)


def create(fmt: str, **params: Any) -> Any:
    return parse_create({"task_name": "t", "kind": "demo", "format": fmt, "params": params})


@pytest.mark.parametrize("fmt,params,field", [
    ("jsonl", {"delimiter": ";"}, "params.delimiter"),
    ("jsonl", {"bom": True}, "params.bom"),
    ("jsonl", {"headers": {"id": "ID"}}, "params.headers"),
    ("xlsx", {"compression": "gzip"}, "params.compression"),
    ("xlsx", {"delimiter": ","}, "params.delimiter"),
    ("xlsx", {"bom": False}, "params.bom"),
])
def test_options_that_do_not_fit_the_format_are_a_validation_error(fmt, params, field):
    with pytest.raises(ValidationError) as exc:
        create(fmt, **params)
    assert exc.value.status == 400 and exc.value.code == "validation_error"
    assert [d["field"] for d in exc.value.details] == [field]
    assert fmt in exc.value.details[0]["issue"]


def test_every_misfit_is_listed():
    with pytest.raises(ValidationError) as exc:
        create("jsonl", delimiter=";", bom=True, headers={"a": "b"})
    assert [d["field"] for d in exc.value.details] == ["params.bom", "params.delimiter",
                                                      "params.headers"]


@pytest.mark.parametrize("fmt,params", [
    ("csv", {"delimiter": "\t", "bom": True, "headers": {"id": "№"}, "compression": "gzip"}),
    ("jsonl", {"compression": "gzip"}),
    ("xlsx", {"headers": {"id": "ID"}, "compression": "none"}),
    ("csv", {}),
])
def test_fitting_options_are_accepted_and_kept(fmt, params):
    req = create(fmt, **params)
    assert {k: req.params[k] for k in params} == params
    assert not (OPTION_NAMES - set(params)) & set(req.params)  # no option defaults stored


@pytest.mark.parametrize("params,field", [
    ({"delimiter": ";;"}, "params.delimiter"),
    ({"delimiter": ""}, "params.delimiter"),
    ({"delimiter": '"'}, "params.delimiter"),
    ({"delimiter": "\n"}, "params.delimiter"),
    ({"bom": "yes"}, "params.bom"),
    ({"headers": {"id": 5}}, "params.headers.id"),
    ({"headers": ["id"]}, "params.headers"),
    ({"compression": "zip"}, "params.compression"),
])
def test_option_values_are_checked_by_the_schema(params, field):
    with pytest.raises(ValidationError) as exc:
        create("csv", **params)
    assert exc.value.details[0]["field"] == field


def test_a_kind_may_not_reuse_an_option_name():
    with pytest.raises(TypeError, match="reserved"):
        class Clashing(RowExporter):  # noqa: F841
            kind = "clash"
            params_schema = {"type": "object", "properties": {"delimiter": {"type": "string"}}}

            def open(self, params, ctx):  # pragma: no cover
                return [], iter(())


def test_a_kind_schema_is_merged_without_touching_the_original():
    own = {"type": "object", "additionalProperties": False,
           "properties": {"n": {"type": "integer"}}}

    class Mine(RowExporter):
        kind = "mine"
        params_schema = own

        def open(self, params, ctx):  # pragma: no cover
            return [], iter(())

    assert set(own["properties"]) == {"n"}
    assert set(Mine.params_schema["properties"]) == {"n"} | OPTION_NAMES
    assert Mine.params_schema["additionalProperties"] is False


@pytest.mark.parametrize("given,ext,expected", [
    ("report.csv", ".csv.gz", "report.csv.gz"),
    ("report", ".csv.gz", "report.csv.gz"),
    ("Report.CSV.GZ", ".csv.gz", "Report.CSV.GZ"),
    ("data.jsonl", ".csv.gz", "data.jsonl.csv.gz"),
    ("表.xlsx", ".xlsx", "表.xlsx"),
    ("表", ".xlsx", "表.xlsx"),
    ("v1.2", ".csv", "v1.2.csv"),
])
def test_file_names_get_a_compound_extension_once(given, ext, expected):
    assert final_file_name(given, "t", ext, datetime(2026, 1, 1, tzinfo=UTC)) == expected
