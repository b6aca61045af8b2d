"""Format writers read back with independent readers."""

import csv
import io
import json

from chalicelib.config import Settings
from chalicelib.exporters import BuildContext, get_exporter
from chalicelib.formats import FORMATS


def encode(fmt, columns, rows):
    counted = []
    data = b"".join(FORMATS[fmt].encode(columns, rows, counted.append))
    return data, sum(counted)


def test_csv_roundtrip_with_unicode_and_awkward_values():
    rows = [{"a": "王, \"quoted\"", "b": None, "c": True, "d": {"k": "ü"}},
            {"a": "line\nbreak", "b": 1.5, "c": False, "d": [1, 2]}]
    data, n = encode("csv", ["a", "b", "c", "d"], rows)
    assert n == 2
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert parsed[0] == ["a", "b", "c", "d"]
    assert parsed[1] == ["王, \"quoted\"", "", "true", '{"k": "ü"}']
    assert parsed[2] == ["line\nbreak", "1.5", "false", "[1, 2]"]


def test_jsonl_roundtrip_keeps_column_order():
    rows = [{"b": 2, "a": "Zoë"}, {"a": "x", "b": None, "z": 9}]
    data, n = encode("jsonl", ["a", "b"], rows)
    lines = data.decode("utf-8").splitlines()
    assert n == 2 and [json.loads(line) for line in lines] == [{"a": "Zoë", "b": 2},
                                                             {"a": "x", "b": None}]
    assert list(json.loads(lines[0])) == ["a", "b"] and "Zoë" in lines[0]


def test_empty_row_set_still_has_a_header():
    data, n = encode("csv", ["id"], [])
    assert data == b"id\r\n" and n == 0
    assert encode("jsonl", ["id"], [])[0] == b""


def test_demo_rows_are_deterministic_and_counted():
    demo = get_exporter("demo")
    ctx = BuildContext(Settings())
    first = b"".join(demo.stream({"rows": 4500, "seed": 3}, "csv", ctx))
    again = b"".join(demo.stream({"rows": 4500, "seed": 3}, "csv", BuildContext(Settings())))
    assert first == again and ctx.rows == 4500
    parsed = list(csv.DictReader(io.StringIO(first.decode("utf-8"))))
    assert len(parsed) == 4500 and parsed[-1]["id"] == "4500"
    assert any(any(ord(ch) > 127 for ch in r["name"]) for r in parsed)
    assert demo.total_rows({"rows": 4500}) == 4500


def test_parallel_pages_yields_everything_and_stops_threads_when_closed():
    import threading

    from chalicelib.exporters.dynamodb_table import parallel_pages

    def source(n):
        def pages():
            for i in range(n):
                yield [i]
        return pages

    got = [p[0] for p in parallel_pages([source(50), source(50)])]
    assert got == list(range(50)) * 2  # segment order (tests/unit/test_dynamodb_table.py)

    before = threading.active_count()
    gen = parallel_pages([source(10_000), source(10_000)], per_source=2)
    next(gen)
    gen.close()
    assert threading.active_count() == before


def test_parallel_pages_raises_a_segment_error():
    import pytest

    from chalicelib.exporters.dynamodb_table import parallel_pages

    def bad():
        yield [1]
        raise ValueError("segment broke")

    with pytest.raises(ValueError, match="segment broke"):
        list(parallel_pages([bad]))


def _per_cell_reference(columns, rows):
    """What the csv writer must produce: every cell through the documented conversions."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False, sort_keys=True)
            cells.append(value)
        writer.writerow(cells)
    return out.getvalue().encode("utf-8")


def test_csv_batches_of_plain_scalars_and_batches_needing_conversion_agree():
    from datetime import date
    from decimal import Decimal

    from chalicelib.formats.base import BATCH_ROWS

    plain = [{"id": i, "amount": Decimal("1.10") * i, "day": date(2026, 1, 1 + i % 28), "name": f"Zoë {i}",
              "score": i / 3} for i in range(BATCH_ROWS)]
    # a second batch where one row lacks a column, a third with a bool and a map
    sparse = [dict(r, id=r["id"] + BATCH_ROWS) for r in plain]
    del sparse[7]["name"]
    converted = [dict(r, id=r["id"] + 2 * BATCH_ROWS) for r in plain]
    converted[-1]["score"], converted[-2]["name"] = True, {"k": ["ü", None]}
    rows = plain + sparse + converted + [{"id": None, "name": "", "amount": 0, "day": None, "score": -0.0}]
    columns = ["id", "name", "amount", "day", "score"]
    data, n = encode("csv", columns, rows)
    assert n == len(rows)
    assert data == _per_cell_reference(columns, rows)
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert parsed[1] == ["0", "Zoë 0", "0.00", "2026-01-01", "0.0"]
    assert parsed[BATCH_ROWS + 8][1] == ""
    assert parsed[3 * BATCH_ROWS][4] == "true"
    assert parsed[3 * BATCH_ROWS - 1][1] == '{"k": ["ü", null]}'


def test_csv_with_a_single_column_writes_one_cell_a_row():
    rows = [{"v": "a,b"}, {"v": 2}, {"other": 1}, {"v": False}]
    data, _ = encode("csv", ["v"], rows)
    assert data == _per_cell_reference(["v"], rows)
    assert data.decode("utf-8").split("\r\n") == ["v", '"a,b"', "2", '""', "false", ""]


def test_csv_rows_that_are_other_mappings_read_missing_columns_as_empty():
    from collections import defaultdict

    rows = [defaultdict(int, {"a": 1}), defaultdict(int, {"a": 2, "b": 3})]
    data, _ = encode("csv", ["a", "b"], rows)
    assert data == b"a,b\r\n1,\r\n2,3\r\n"
    assert all("b" not in row for row in rows[:1])
