"""dynamodb_table without AWS: segment order and its memory bound, columns, progress."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest

from chalicelib.config import Settings
from chalicelib.errors import ExportError
from chalicelib.exporters import BuildContext
from chalicelib.exporters.dynamodb_table import (
    SAMPLE_ITEMS,
    column_choice_problems,
    key_first,
    missing_column_warnings,
    parallel_pages,
    source_shape,
)
from chalicelib.formats.base import BATCH_ROWS, FORMATS
from chalicelib.worker import MAX_RUNNING_PERCENT, Worker

#: How long a test waits for a segment thread to get somewhere before it fails (never reached
#: when the code is right: no assertion depends on it).
PATIENCE = 10


# -- segment order ---------------------------------------------------------------------------------


def test_segments_are_written_in_segment_order_whichever_answers_first():
    later_done = [threading.Event(), threading.Event()]

    def segment(number: int, pages: int):
        def read():
            if number == 0:  # segment 0 answers last: only once the others have read everything
                assert all(done.wait(PATIENCE) for done in later_done)
            for page in range(pages):
                yield [f"{number}-{page}"]
            if number:
                later_done[number - 1].set()
        return read

    got = [page[0] for page in parallel_pages([segment(0, 2), segment(1, 2), segment(2, 1)])]
    assert got == ["0-0", "0-1", "1-0", "1-1", "2-0"]


def test_each_segment_holds_at_most_its_read_ahead_plus_one_page():
    """The bound is a count: pages a segment has read that the consumer has not taken."""
    per_source, pages_each, segments = 2, 12, 4
    lock = threading.Lock()
    read = [0] * segments
    taken = [0] * segments
    held_most = [0] * segments
    reached = [threading.Event() for _ in range(segments)]

    def segment(number: int):
        def pages():
            for page in range(pages_each):
                with lock:
                    read[number] += 1
                    held_most[number] = max(held_most[number], read[number] - taken[number])
                    if read[number] == per_source + 1:
                        reached[number].set()
                yield [(number, page)]
        return pages

    order = []
    for page in parallel_pages([segment(i) for i in range(segments)], per_source=per_source):
        number, _ = page[0]
        with lock:
            taken[number] += 1
        order.append(page[0])
        if len(order) == 1:
            # the later segments read ahead while segment 0 is written, and stop at their bound
            assert all(event.wait(PATIENCE) for event in reached[1:])
            with lock:
                assert read[1:] == [per_source + 1] * (segments - 1)
    assert order == [(s, p) for s in range(segments) for p in range(pages_each)]
    assert read == taken == [pages_each] * segments
    # its buffer, the page it waits to hand over, and the one the consumer is writing
    assert max(held_most) <= per_source + 2, held_most


def test_a_later_segments_error_is_raised_before_its_turn_and_every_thread_stops():
    broke = threading.Event()

    def long_segment():
        assert broke.wait(PATIENCE)
        for page in range(10_000):
            yield [page]

    def broken():
        broke.set()
        raise ValueError("segment 1 broke")
        yield []  # pragma: no cover - makes this a generator

    before = threading.active_count()
    taken = []
    with pytest.raises(ValueError, match="segment 1 broke"):
        taken.extend(parallel_pages([long_segment, broken]))
    assert len(taken) < 100  # not after the 10,000 pages of segment 0
    assert threading.active_count() == before


# -- columns ---------------------------------------------------------------------------------------

TABLE = {  # the shape of DescribeTable's "Table"
    "TableName": "orders",
    "ItemCount": 1234,
    "KeySchema": [{"AttributeName": "placed_at", "KeyType": "RANGE"},
                  {"AttributeName": "customer", "KeyType": "HASH"}],
    "GlobalSecondaryIndexes": [{
        "IndexName": "by_status", "ItemCount": 77,
        "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                      {"AttributeName": "placed_at", "KeyType": "RANGE"}],
    }],
    "LocalSecondaryIndexes": [{
        "IndexName": "by_total",
        "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"},
                      {"AttributeName": "total", "KeyType": "RANGE"}],
    }],
}


def test_key_attributes_come_first_then_the_others_in_code_point_order():
    table = source_shape(TABLE, None)
    assert table.keys == ("customer", "placed_at") and table.item_count == 1234
    assert key_first(table.keys, {"zeta", "Alpha", "placed_at", "beta", "customer"}) == [
        "customer", "placed_at", "Alpha", "beta", "zeta"]
    gsi = source_shape(TABLE, "by_status")  # the index's own keys after the table's
    assert gsi.keys == ("customer", "placed_at", "status") and gsi.item_count == 77
    lsi = source_shape(TABLE, "by_total")  # no ItemCount reported: no estimate
    assert lsi.keys == ("customer", "placed_at", "total") and lsi.item_count is None
    with pytest.raises(ExportError) as err:
        source_shape(TABLE, "by_nothing")
    assert err.value.code == "index_not_found" and "by_nothing" in err.value.message


def test_a_column_no_item_has_is_reported_with_the_closest_attribute():
    warnings = missing_column_warnings(["id", "nmae", "city", "rare"],
                                       seen={"id", "city"}, known={"id", "name", "city", "rare"})
    assert warnings == [{
        "code": "column_not_found", "field": "params.columns[1]",
        "message": f"No exported item, and none of the first {SAMPLE_ITEMS} items of the source, "
                   "has the attribute 'nmae', so its column is empty. Did you mean 'name'?",
    }]  # "rare" is an attribute of the table that the exported items lack: no typo
    assert missing_column_warnings(["id"], seen=set(), known=set())[0]["field"] == "params.columns[0]"
    assert missing_column_warnings(["id"], seen={"id"}, known=set()) == []


def test_columns_and_all_columns_together_are_refused_in_words():
    assert column_choice_problems({"columns": ["id"], "all_columns": False}) == []
    assert column_choice_problems({"all_columns": True}) == []
    assert column_choice_problems({"columns": ["id"], "all_columns": True}) == [{
        "field": "params.all_columns",
        "issue": "cannot be true together with params.columns; give one or the other"}]


# -- progress --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_are_counted_with_the_chunk_that_holds_them(fmt):
    """A heartbeat between two chunks must see the rows whose bytes it sees."""
    counted: list[int] = []
    rows = [{"id": i, "note": "multi\nline" if i % 7 == 0 else "x"} for i in range(BATCH_ROWS + 10)]
    data = b""
    for chunk in FORMATS[fmt].encode(["id", "note"], rows, counted.append):
        data += chunk
        if fmt == "csv":
            written = len(list(csv.reader(io.StringIO(data.decode("utf-8"))))) - 1  # the header
        else:
            written = len([json.loads(line) for line in data.decode("utf-8").splitlines()])
        assert sum(counted) == written
    assert sum(counted) == len(rows)


def test_percent_only_grows_and_stays_below_100_until_the_file_is_stored():
    ctx = BuildContext(Settings(), total_rows=1000)  # an estimate: the table holds more
    seen = []
    for rows in (0, 10, 500, 989, 990, 999, 1000, 1200, 1500):
        ctx.rows = rows
        progress = Worker._progress(ctx, size=rows * 10)
        assert progress["rows"] == rows and progress["total"] >= rows
        assert progress["percent"] <= MAX_RUNNING_PERCENT == 99
        seen.append(progress["percent"])
    assert seen == sorted(seen) and seen[-1] == 99
    assert Worker._progress(ctx, size=1, final=True) == {
        "rows": 1500, "bytes": 1, "total": 1500, "percent": 100.0}
    ctx.total_rows = None
    assert Worker._progress(ctx, size=1) == {"rows": 1500, "bytes": 1}
