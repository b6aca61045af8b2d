"""The writer interface and registry.

A writer turns an iterator of rows into an iterator of byte chunks of
bounded size, so the uploader never holds more than one part in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, islice
from operator import itemgetter
from typing import Any, Protocol

Row = Mapping[str, Any]
RowCounter = Callable[[int], None]

#: Rows encoded per chunk: large enough to amortise Python overhead, small
#: enough that a chunk stays far below one upload part.
BATCH_ROWS = 2000
#: What Excel needs at the start of a csv to read it as UTF-8 rather than the
#: local ANSI code page.
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class WriteOptions:
    """How a writer lays out its output; the defaults give the plain formats.

    Built from a task's params by ``formats.options.write_options``; a writer
    reads only the fields that apply to it.
    """

    delimiter: str = ","
    bom: bool = False
    #: column -> display label for header rows (csv, xlsx); unknown columns are ignored
    headers: Mapping[str, str] = field(default_factory=dict)
    #: xlsx rows per sheet, header included; None means Excel's own limit
    sheet_rows: int | None = None

    def header_row(self, columns: Sequence[str]) -> list[str]:
        return [self.headers.get(c, c) for c in columns]


PLAIN = WriteOptions()


class Encoder(Protocol):
    def __call__(
        self, columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter,
        options: WriteOptions = PLAIN,
    ) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str
    #: rows → bytes; None for the formats of byte kinds (zip, log archives)
    encode: Encoder | None = None
    #: the output options (``formats.options``) this format accepts in params
    options: frozenset[str] = frozenset()


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode("ascii")
    return str(value)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, set, frozenset, bytes, bytearray)):
        return json.dumps(value, ensure_ascii=False, default=_json_default, sort_keys=True)
    return value


#: Values csv writes as they are (it writes None as ""): no per-cell call for them.
_CSV_NATIVE = frozenset({str, int, float, type(None)})
#: Types whose values ``_cell`` changes; a batch with none of them is written as it is.
_CONVERTED = (bool, dict, list, set, frozenset, bytes, bytearray)


@lru_cache(maxsize=256)
def _needs_cell(kind: type) -> bool:
    return issubclass(kind, _CONVERTED)


def _csv_records(columns: Sequence[str], batch: list[Row]) -> Iterable[Sequence[Any]]:
    """The batch's cells in column order, converted only where ``_cell`` would change them.

    The common batch (plain dicts that have every column, holding scalars
    such as str, int, float, Decimal or dates) is picked and checked in C,
    with no Python call per row; any other batch takes the per-cell path.
    Other mappings go that way too: a defaultdict would answer a missing
    column with its default where ``row.get`` gives None.
    """
    records: list[Any] | None = None
    if set(map(type, batch)) == {dict}:
        # a row without some column: row.get gives None, which csv writes as ""
        with suppress(KeyError):
            records = list(map(itemgetter(*columns), batch))
    if records is not None:
        if len(columns) == 1:
            records = [(value,) for value in records]
        if not any(map(_needs_cell, set(map(type, chain.from_iterable(records))))):
            return records
    return ([v if type(v) in _CSV_NATIVE else _cell(v) for v in map(row.get, columns)]
            for row in batch)


def encode_csv(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=options.delimiter, lineterminator="\r\n")
    writer.writerow(options.header_row(columns))
    prefix = UTF8_BOM if options.bom else b""
    it = iter(rows)
    while True:
        batch = list(islice(it, BATCH_ROWS))
        if batch and columns:
            writer.writerows(_csv_records(columns, batch))
        elif batch:
            writer.writerows([[]] * len(batch))
        chunk = buf.getvalue()
        if chunk:
            yield prefix + chunk.encode("utf-8")
            prefix = b""
            buf.seek(0)
            buf.truncate()
        if not batch:
            return
        on_rows(len(batch))


def encode_jsonl(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    """One JSON object a line; with ``columns`` the keys follow their order.

    Keys stay the column names whatever ``headers`` says: jsonl is read by
    programs, which want stable keys, not display labels.
    """
    dumps = json.JSONEncoder(ensure_ascii=False, default=_json_default).encode
    it = iter(rows)
    while True:
        batch = list(islice(it, BATCH_ROWS))
        if not batch:
            return
        if columns:
            lines = [dumps({c: row.get(c) for c in columns}) for row in batch]
        else:
            lines = [dumps(dict(row)) for row in batch]
        lines.append("")
        yield "\n".join(lines).encode("utf-8")
        on_rows(len(batch))


def encode_xlsx(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    """Imported on first use, so the API's cold start never loads XlsxWriter."""
    from chalicelib.formats.xlsx import write_xlsx

    return write_xlsx(columns, rows, on_rows, options)


XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

FORMATS: dict[str, Format] = {
    "csv": Format("csv", ".csv", "text/csv; charset=utf-8", encode_csv,
                  frozenset({"delimiter", "bom", "headers", "compression"})),
    "jsonl": Format("jsonl", ".jsonl", "application/x-ndjson; charset=utf-8", encode_jsonl,
                    frozenset({"compression"})),
    "xlsx": Format("xlsx", ".xlsx", XLSX_CONTENT_TYPE, encode_xlsx, frozenset({"headers"})),
}


def get_format(name: str) -> Format:
    return FORMATS[name]
