"""The writer interface and registry.

A writer turns an iterator of rows into an iterator of byte chunks of
bounded size, so the uploader never holds more than one part in memory.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from itertools import chain, islice, repeat
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
    #: csv: defuse text cells a spreadsheet would run as a formula (see ``defuse``)
    escape_formulas: bool = True
    #: csv: start with the header row (and the BOM); a segment after the first of one
    #: composed file leaves it out, so the file has it once
    header: bool = True

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


# -- formula injection ---------------------------------------------------------------------------
#
# Excel, LibreOffice and Google Sheets run a csv cell that starts with one of
# these characters as a formula, so a value such as =HYPERLINK("http://evil","x")
# from a table would become a live link (OWASP, "CSV Injection"). ``defuse``
# puts a single quote in front: spreadsheets show the text and run nothing.
#
# The rule looks at values, before csv quotes them, so it is the same for every
# delimiter: with a tab delimiter a cell that starts with a tab becomes '<tab>...,
# which csv then quotes as it quotes any cell that holds the delimiter.

#: The characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = frozenset("=+-@\t\r")
#: Text that is a plain decimal number ("-5", "+1.5", "-2e3", "-.5"): a
#: spreadsheet reads it as that number, never as a formula, so it stays as is.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Exact types ``_guarded`` always returns unchanged: numbers are exempt and None is "".
_NEVER_FORMULA = frozenset({int, float, Decimal, type(None)})


def defuse(text: str) -> str:
    """``text`` as a cell a spreadsheet shows rather than runs.

    A text that starts with a character of ``FORMULA_STARTS`` and is not a
    plain number gets a leading ``'``; anything else is returned as it is.
    """
    if text[:1] in FORMULA_STARTS and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _guarded(value: Any) -> Any:
    """``_cell`` plus ``defuse``: what a csv cell holds when formulas are escaped.

    Numbers (int, float, Decimal; bool is text by now) are never changed.
    Any other value is judged by its text, which for a non-str is what csv
    would write for it, ``str(value)``.
    """
    value = _cell(value)
    if isinstance(value, (int, float, Decimal)):
        return value
    return defuse(value if isinstance(value, str) else str(value))


#: Joins a text column's cells for ``_starts_formula``; a character data
#: hardly ever holds, so a hit is almost always a cell start.
_SEP = "\x00"
_SEP_THEN = tuple(_SEP + c for c in sorted(FORMULA_STARTS))
_FORMULA_PREFIXES = tuple(sorted(FORMULA_STARTS))
#: Exact types of the cells a non-text column may hold and still be written as
#: it is: numbers are exempt, None is written as "", and the text of the
#: others starts with a digit.
_NEVER_FORMULA_COLUMN = _NEVER_FORMULA | {date, datetime, time}


def _starts_formula(joined: str) -> bool:
    """Whether a cell of a column joined by ``_SEP`` may start with a formula character.

    Most formula characters are absent from most columns: a fast ``in`` (a
    memchr for ASCII text) rules each out before the two-character search.
    """
    if joined.startswith(_FORMULA_PREFIXES):
        return True
    return any(c in joined and c_after in joined
               for c, c_after in zip(_FORMULA_PREFIXES, _SEP_THEN, strict=True))


def _formula_free(column: list[Any]) -> bool:
    """True when csv may write this column's cells as they are with formulas escaped.

    Checked in C, with no Python per cell: a text column (str cells, or str
    and None) is joined by ``_SEP`` and searched; any other must hold only
    ``_NEVER_FORMULA_COLUMN`` types. False (a cell that may start a formula,
    even a plain number such as "-5", or a value of another type) sends the
    column to ``_guarded_cells``, which decides cell by cell.
    """
    try:
        joined = _SEP.join(column)  # fails at once on a column that starts with a non-str
    except TypeError:
        kinds = set(map(type, column))
        if kinds <= _NEVER_FORMULA_COLUMN:
            return True
        if not kinds <= {str, type(None)}:
            return False
        joined = _SEP.join(filter(None, column))
    return not _starts_formula(joined)


def _guarded_cells(cells: Iterable[Any]) -> list[Any]:
    """The per-cell path: each cell through ``_guarded`` unless its type or first
    character says ``_guarded`` would return it unchanged."""
    return [v if type(v) in _NEVER_FORMULA or type(v) is str and v[:1] not in FORMULA_STARTS
            else _guarded(v) for v in cells]


# -- csv ------------------------------------------------------------------------------------------


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


def _columns(columns: Sequence[str], batch: list[Row]) -> list[list[Any]] | None:
    """The batch column by column, picked in C; None unless every row is a plain dict.

    A column that some row lacks is picked with ``dict.get``, which gives
    None there, as ``row.get`` does. Other mappings take the per-cell path:
    a defaultdict would answer a missing column with its default.
    """
    if set(map(type, batch)) != {dict}:
        return None
    picked = []
    for name in columns:
        try:
            picked.append(list(map(itemgetter(name), batch)))
        except KeyError:
            picked.append(list(map(dict.get, batch, repeat(name))))
    return picked


def _escaped_records(columns: Sequence[str], batch: list[Row]) -> Iterable[Sequence[Any]]:
    """``_csv_records`` with formulas escaped.

    The common batch is picked column by column rather than row by row, so
    that ``_formula_free`` can check a whole column with one join and a few
    substring searches, and goes to csv through ``zip``: no Python call per
    row or cell. Only a column that may hold a formula, or holds values
    ``_cell`` converts, goes cell by cell; the batch's other columns do not.
    Rows that lack a column stay on this path too (``_columns``).
    """
    picked = _columns(columns, batch)
    if picked is None:
        return (_guarded_cells(map(row.get, columns)) for row in batch)
    for i, column in enumerate(picked):
        if not _formula_free(column):
            picked[i] = _guarded_cells(column)
    return zip(*picked, strict=True)


def encode_csv(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=options.delimiter, lineterminator="\r\n")
    escape = options.escape_formulas
    header = options.header_row(columns)
    # header labels are cells too: a label could start a formula as well (a
    # column name that is not a str, against the type hints, is written as before)
    if options.header:
        writer.writerow([defuse(label) if isinstance(label, str) else label for label in header]
                        if escape else header)
    prefix = UTF8_BOM if options.bom and options.header else b""
    it = iter(rows)
    while True:
        batch = list(islice(it, BATCH_ROWS))
        if batch and columns:
            writer.writerows(_escaped_records(columns, batch) if escape else _csv_records(columns, batch))
        elif batch:
            writer.writerows([[]] * len(batch))
        if batch:
            # counted with the chunk that holds them, not once the consumer asks for more:
            # a heartbeat while that chunk goes up would show its bytes without its rows
            on_rows(len(batch))
        chunk = buf.getvalue()
        if chunk:
            yield prefix + chunk.encode("utf-8")
            prefix = b""
            buf.seek(0)
            buf.truncate()
        if not batch:
            return


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
        on_rows(len(batch))  # with the chunk that holds them (see encode_csv)
        yield "\n".join(lines).encode("utf-8")


def encode_xlsx(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    """Imported on first use, so the API's cold start never loads the xlsx writer."""
    from chalicelib.formats.xlsx import write_xlsx

    return write_xlsx(columns, rows, on_rows, options)


XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

FORMATS: dict[str, Format] = {
    "csv": Format("csv", ".csv", "text/csv; charset=utf-8", encode_csv,
                  frozenset({"delimiter", "bom", "headers", "escape_formulas", "compression"})),
    "jsonl": Format("jsonl", ".jsonl", "application/x-ndjson; charset=utf-8", encode_jsonl,
                    frozenset({"compression"})),
    "xlsx": Format("xlsx", ".xlsx", XLSX_CONTENT_TYPE, encode_xlsx, frozenset({"headers"})),
}


def get_format(name: str) -> Format:
    return FORMATS[name]
