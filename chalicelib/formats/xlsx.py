"""xlsx streamed: the sheets' XML is made batch by batch and zipped as it goes.

An xlsx is a zip of XML parts. This module writes those parts itself:
each batch of rows becomes ``<row>`` elements of the current sheet, which
are deflated and handed on at once, and the zip's directory (with the
workbook, the styles and the content types, which need the list of
sheets) comes last. Memory holds one batch; nothing is written to disk, so
the file goes straight to the uploader and ``/tmp`` no longer bounds it.

Why this route and not another (the issue asked for five times the rows a
second of XlsxWriter's constant-memory mode, at the same flat memory; the
figures are in docs/benchmarks.md, section 6):

- XlsxWriter made several Python calls for every cell (its type checks,
  its row table, its XML writer), about 20,000 demo rows/s; it also needed
  its row files and the whole workbook on ``/tmp`` before the first byte
  could be uploaded.
- ``rustpy-xlsxwriter`` 0.8.0 (a binding of rust_xlsxwriter) wrote about
  175,000 demo rows per CPU second here with flat memory, but it *pulls*
  all rows of all sheets from iterables in one call: the writer could no
  longer yield between batches without a thread and a queue, must name
  every sheet before the first row (the row count is not known in
  advance), and every cell would first have to be converted in Python,
  because it guesses a column's type from earlier rows (it wrote an int
  after a date as a date), writes NaN as an empty cell and keeps no digits
  past 15. It also still needs ``/tmp`` for its row files and the finished
  workbook, and is a 1.5 MB binary wheel.
- Here a batch is encoded column by column with str methods that run in C:
  a column of text is joined once and searched for anything XML or Excel
  needs escaped (only then escaped with a few ``replace`` calls and split
  again), a column of numbers is checked with ``min``, ``max`` and ``all``,
  and each row is one ``str.format`` of a template made for the batch's
  column types. Only the cells that need it (Decimal, dates, columns of
  mixed types, text with a NUL or of more than 16,383 characters) go
  through Python one by one. Deflate runs at level 1, which shrinks the
  XML about sixfold in well under half the time of level 6 (sevenfold).

What a cell becomes is what XlsxWriter wrote (see ``_fragment``): numbers,
booleans and text as such, integers of 16 digits or more and non-finite
numbers as text, other values as the text csv would write. Control
characters and lone surrogates use the ``_xHHHH_`` escape Excel decodes,
and a literal ``_xHHHH_`` in the data is escaped so it reads back as typed.

The zip is written front to back: each member's sizes and CRC follow its
data in a data descriptor. ZIP64 fields appear only where a size, an
offset or the member count needs them, as Python's zipfile writes them:
Excel and LibreOffice refuse some files that carry them needlessly
(LibreOffice 7.4 any file with a ZIP64 end record). A sheet's local header
says version 4.5, which Excel wants on a member past 4 GiB (Apache POI does
the same).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from itertools import islice
from typing import Any

from chalicelib.errors import ExportError
from chalicelib.formats.base import BATCH_ROWS, PLAIN, Row, RowCounter, WriteOptions, _cell, _columns

#: Excel's rows per sheet, header included. Past it, a new sheet starts.
MAX_SHEET_ROWS = 1_048_576
#: Excel's columns per sheet.
MAX_COLUMNS = 16_384
SHEET_NAME = "data"
#: Excel's limit on the text of a cell, in UTF-16 units; longer text is cut there.
MAX_TEXT = 32_767
#: Integers with more digits lose precision in Excel (15 significant digits):
#: they are written as text so ids survive intact.
_EXACT_INT = 10**15
#: zlib level 1: the fastest that still compresses sheet XML well.
DEFLATE_LEVEL = 1
#: Cells a batch holds at most: a wide export reads fewer than ``BATCH_ROWS`` rows a batch, so
#: the batch's XML stays some ten megabytes (2,000 rows of 16,384 columns would be gigabytes).
BATCH_CELLS = 250_000


def sheet_name(number: int) -> str:
    return SHEET_NAME if number == 1 else f"{SHEET_NAME} ({number})"


def column_letters(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA: the column part of a cell reference."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


# -- cells --------------------------------------------------------------------------------------
#
# A cell is written as '<c r="B7"' followed by its fragment; the fragment
# carries the type, the value and the closing tag.

_EMPTY = "/>"
_NUMBER = "><v>{}</v></c>"
_TEXT = ' t="inlineStr"><is><t>{}</t></is></c>'
_TEXT_KEEP = ' t="inlineStr"><is><t xml:space="preserve">{}</t></is></c>'
_BOOLEAN = ' t="b"><v>{}</v></c>'
_TRUE = _BOOLEAN.format(1)
_FALSE = _BOOLEAN.format(0)

#: A literal escape sequence in the data: its underscore is escaped in turn.
_ESCAPE_LIKE = re.compile(r"(_x[0-9a-fA-F]{4}_)")
#: What XML 1.0 cannot hold (or an XML parser would change: a CR becomes a LF),
#: and surrogates, which UTF-8 cannot: written as Excel's _xHHHH_ escape.
_UNWRITABLE = re.compile("[\x00-\x08\x0b-\x1f\ufffe\uffff\ud800-\udfff]")
#: The same, for a column joined by NULs (the NUL is then the separator).
_UNWRITABLE_JOINED = re.compile("[\x01-\x08\x0b-\x1f\ufffe\uffff\ud800-\udfff]")
#: Text whose leading or trailing space an XML reader would drop without xml:space.
_EDGE_SPACE = re.compile(r"^\s|\s$")
#: A cell of a NUL-joined column that starts with a space (searched backwards too: one that ends with one).
_SPACE_AFTER_SEP = re.compile(r"\x00\s")
_SEP = "\x00"


def _hex_escape(match: re.Match[str]) -> str:
    return f"_x{ord(match.group()):04X}_"


def _escape(text: str) -> str:
    """Text as XML character data, with Excel's escapes (as XlsxWriter wrote it)."""
    if "_x" in text:
        text = _ESCAPE_LIKE.sub(r"_x005F\1", text)
    text = _UNWRITABLE.sub(_hex_escape, text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _utf16_cut(text: str) -> str:
    """``text`` cut to Excel's limit, counted in UTF-16 units, never inside a pair."""
    if len(text) <= MAX_TEXT // 2:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) <= 2 * MAX_TEXT:
        return text
    units = units[:2 * MAX_TEXT]
    if 0xD8 <= units[-1] <= 0xDB:  # the first half of a pair: drop it too
        units = units[:-2]
    return units.decode("utf-16-le", "surrogatepass")


def _text_fragment(text: str) -> str:
    escaped = _escape(_utf16_cut(text))
    return (_TEXT_KEEP if _EDGE_SPACE.search(escaped) else _TEXT).format(escaped)


def _fragment(value: Any) -> str:
    """One cell, whatever its value; what XlsxWriter's typed writes made of it.

    A string that looks like a formula stays a string: no cell is ever a formula.
    """
    if value is None:
        return _EMPTY
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        if -_EXACT_INT < value < _EXACT_INT:
            return _NUMBER.format(int(value))
    elif isinstance(value, float):
        if math.isfinite(value):
            return _NUMBER.format(float(value))
    elif isinstance(value, Decimal):
        if value.is_finite() and len(value.as_tuple().digits) <= 15 and abs(value.adjusted()) < 300:
            return _NUMBER.format(float(value))
    elif isinstance(value, str):
        return _text_fragment(value)
    return _text_fragment(str(_cell(value)))


def _text_column(column: list[str]) -> tuple[str, list[str]] | None:
    """A column of str as (cell template, escaped texts), checked in a few C calls.

    Text that needs no escape, the common case, is used as it is. None when
    some cell needs the one-by-one path (a NUL, or text that may pass Excel's limit).
    """
    if max(map(len, column)) > MAX_TEXT // 2:
        return None
    joined = _SEP.join(column)
    if joined.count(_SEP) != len(column) - 1:  # a NUL in the data
        return None
    escaped = joined
    if "_x" in escaped:
        escaped = _ESCAPE_LIKE.sub(r"_x005F\1", escaped)
    if _UNWRITABLE_JOINED.search(escaped):
        escaped = _UNWRITABLE_JOINED.sub(_hex_escape, escaped)
    if "&" in escaped or "<" in escaped or ">" in escaped:
        escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # xml:space on every cell of the column when one needs it: harmless on the others
    edge_space = (escaped[:1].isspace() or escaped[-1:].isspace() or _SPACE_AFTER_SEP.search(escaped)
                  or _SPACE_AFTER_SEP.search(escaped[::-1]))
    template = _TEXT_KEEP if edge_space else _TEXT
    return template, column if escaped is joined else escaped.split(_SEP)


def _number_column(column: list[Any], kinds: set[type]) -> tuple[str, list[Any]] | None:
    """A column of int and float that Excel takes as numbers, as (cell template, values); else None.

    ``str.format`` writes a float as ``str`` does: its shortest repr that reads back exactly.
    """
    if not (min(column) > -_EXACT_INT and max(column) < _EXACT_INT):
        return None  # a large int (text), or a float too large for the check (one by one)
    if float in kinds and not all(map(math.isfinite, column)):
        return None
    return _NUMBER, column


def _column(column: list[Any]) -> tuple[str, list[Any]]:
    """A batch's column as (cell template, values): checked in C where the types allow.

    A column of one kind (text, numbers, booleans) keeps its values and gets
    that kind's template. Any other column, or one with empty cells, is
    turned into fragments, with the template "{}".
    """
    kinds = set(map(type, column))
    has_none = type(None) in kinds
    if has_none:
        kinds.discard(type(None))
        if not kinds:
            return "{}", [_EMPTY] * len(column)
        values = [v for v in column if v is not None]
    else:
        values = column
    typed: tuple[str, list[Any]] | None = None
    if kinds == {str}:
        typed = _text_column(values)
    elif kinds <= {int, float}:
        typed = _number_column(values, kinds)
    elif kinds == {bool}:
        typed = _BOOLEAN, list(map(int, values))
    if typed is None:
        return "{}", list(map(_fragment, column))
    if not has_none:
        return typed
    template, cells = typed
    head, tail = template.split("{}")
    # the values of the non-empty cells as fragments, in C: one join, one replace and one split
    fragments = (head + _SEP.join(map(str, cells)).replace(_SEP, tail + _SEP + head) + tail).split(_SEP)
    if len(fragments) != len(cells):  # a NUL in the text after all: never, _text_column checked
        return "{}", list(map(_fragment, column))
    it = iter(fragments)
    return "{}", [_EMPTY if v is None else next(it) for v in column]


# -- sheets -------------------------------------------------------------------------------------

_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _sheet_head(first: bool) -> str:
    selected = ' tabSelected="1"' if first else ""
    return (f'{_XML}<worksheet xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><sheetViews>'
            f'<sheetView{selected} workbookViewId="0">'
            '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
            '<selection pane="bottomLeft"/></sheetView></sheetViews>'
            '<sheetFormatPr defaultRowHeight="15"/><sheetData>')


_SHEET_TAIL = ('</sheetData><pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" '
               'header="0.3" footer="0.3"/></worksheet>')


def _header_row(letters: list[str], labels: list[str]) -> str:
    """Row 1: the labels, bold (style 1)."""
    cells = "".join(f'<c r="{col}1" s="1"{_fragment(label)}'
                    for col, label in zip(letters, labels, strict=True))
    return f'<row r="1">{cells}</row>'


def _row_template(letters: list[str], cells: list[str]) -> str:
    """'<row r="{0}"><c r="A{0}"><v>{1}</v></c>...</row>': one str.format a row.

    ``cells`` holds each column's cell template, with "{}" where its value goes.
    """
    parts = "".join(f'<c r="{col}{{0}}"' + cell.replace("{}", f"{{{i}}}")
                    for i, (col, cell) in enumerate(zip(letters, cells, strict=True), 1))
    return f'<row r="{{0}}">{parts}</row>'


def _rows_xml(letters: list[str], columns: Sequence[str], batch: list[Row], first_row: int) -> str:
    picked = _columns(columns, batch)
    if picked is None:  # rows that are not plain dicts: picked with their own get
        picked = [[row.get(name) for row in batch] for name in columns]
    typed = [_column(column) for column in picked]
    template = _row_template(letters, [cell for cell, _ in typed])
    numbers = map(str, range(first_row, first_row + len(batch)))  # made once, used in every cell's r
    return "".join(map(template.format, numbers, *(values for _, values in typed)))


def _workbook_parts(sheets: int) -> list[tuple[str, str]]:
    """The parts that name the sheets, written once the last sheet is done."""
    numbers = range(1, sheets + 1)
    sheet_list = "".join(f'<sheet name="{sheet_name(n)}" sheetId="{n}" r:id="rId{n}"/>' for n in numbers)
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    sheet_rels = "".join(
        f'<Relationship Id="rId{n}" Type="{rel}/worksheet" Target="worksheets/sheet{n}.xml"/>'
        for n in numbers)
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    overrides = "".join(f'<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="{ct}.worksheet+xml"/>'
                        for n in numbers)
    pkg_rels = "http://schemas.openxmlformats.org/package/2006/relationships"
    return [
        ("xl/workbook.xml",
         f'{_XML}<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><bookViews><workbookView/></bookViews>'
         f"<sheets>{sheet_list}</sheets></workbook>"),
        ("xl/_rels/workbook.xml.rels",
         f'{_XML}<Relationships xmlns="{pkg_rels}">{sheet_rels}'
         f'<Relationship Id="rId{sheets + 1}" Type="{rel}/styles" Target="styles.xml"/></Relationships>'),
        ("xl/styles.xml", _STYLES),
        ("_rels/.rels",
         f'{_XML}<Relationships xmlns="{pkg_rels}">'
         f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        ("[Content_Types].xml",
         f'{_XML}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
         '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
         '<Default Extension="xml" ContentType="application/xml"/>'
         f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
         f'<Override PartName="/xl/styles.xml" ContentType="{ct}.styles+xml"/>{overrides}</Types>'),
    ]


#: Style 0 is the default, style 1 the bold header.
_STYLES = (
    f'{_XML}<styleSheet xmlns="{_MAIN_NS}"><fonts count="2">'
    '<font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


# -- the writer ---------------------------------------------------------------------------------


def write_xlsx(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    """Rows in, the workbook's bytes out, one chunk (maybe empty) per batch of rows.

    The worker checks for cancel and its time budget between chunks, so a
    batch whose XML deflate keeps back still yields its (empty) chunk.
    """
    limit = options.sheet_rows or MAX_SHEET_ROWS
    if not 2 <= limit <= MAX_SHEET_ROWS:
        raise ValueError(f"sheet_rows must be 2..{MAX_SHEET_ROWS}, not {limit}")
    if len(columns) > MAX_COLUMNS:
        raise ExportError("too_many_columns",
                          f"An xlsx sheet holds at most {MAX_COLUMNS} columns; this export has "
                          f"{len(columns)}. Choose fewer columns or another format.")
    letters = [column_letters(i) for i in range(len(columns))]
    header = _header_row(letters, options.header_row(columns))
    archive = ZipStream()
    batch_rows = max(1, min(BATCH_ROWS, BATCH_CELLS // max(1, len(columns))))
    it = iter(rows)
    batch = list(islice(it, batch_rows))
    sheets = 0
    while True:
        sheets += 1
        sheet = archive.member(f"xl/worksheets/sheet{sheets}.xml", large=True)
        yield sheet.start() + sheet.write(_sheet_head(sheets == 1) + header)
        row_no = 2
        while batch and row_no <= limit:
            take = batch[:limit - row_no + 1]
            # the rest of this batch for the next sheet, or the next batch
            batch = batch[len(take):] if len(take) < len(batch) else list(islice(it, batch_rows))
            chunk = sheet.write(_rows_xml(letters, columns, take, row_no))
            row_no += len(take)
            on_rows(len(take))  # with the chunk that holds them
            yield chunk
        yield sheet.close(_SHEET_TAIL)
        if not batch:
            break
    for name, xml in _workbook_parts(sheets):
        part = archive.member(name)
        yield part.start() + part.close(xml)
    yield archive.close()


# -- the zip ------------------------------------------------------------------------------------

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_LOCATOR = struct.Struct("<IIQI")
#: What a 32-bit (16-bit) field says when its value is in the ZIP64 record instead.
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF
#: Sizes and offsets from here on, and member counts from ``ZIP64_COUNT`` on, take ZIP64
#: fields (module constants so a test can lower them to see those fields read back).
ZIP64_SIZE = _FULL32
ZIP64_COUNT = _FULL16
_DATA_DESCRIPTOR_FLAG = 0x08
_DEFLATED = 8
#: 1980-01-01 00:00 in MS-DOS form, as XlsxWriter dates its members: the same rows give the same bytes.
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1


class ZipStream:
    """A zip archive written front to back, as its members' bytes are made.

    Each member is deflated as it is written; its CRC and sizes follow its
    data (a data descriptor) and the central directory. Sizes and offsets
    beyond 4 GiB, or more than 65,535 members, get ZIP64 fields; smaller
    archives carry none.
    """

    def __init__(self, level: int | None = None) -> None:
        self.level = DEFLATE_LEVEL if level is None else level
        self.offset = 0
        self._directory: list[bytes] = []

    def member(self, name: str, *, large: bool = False) -> ZipMember:
        """A new member; ``large`` if it may pass 4 GiB (its local header then says version 4.5)."""
        return ZipMember(self, name, large)

    def close(self) -> bytes:
        """The central directory and its end records."""
        directory = b"".join(self._directory)
        start, size, count = self.offset, len(directory), len(self._directory)
        end = b""
        if count >= ZIP64_COUNT or start >= ZIP64_SIZE or size >= ZIP64_SIZE:
            end64_at = start + size
            end += _END64.pack(0x06064B50, 44, 45, 45, 0, 0, count, count, size, start)
            end += _END64_LOCATOR.pack(0x07064B50, 0, end64_at, 1)
        # a field that fits keeps its value (as zipfile writes it): readers without ZIP64 still cope
        count, size, start = min(count, _FULL16), min(size, _FULL32), min(start, _FULL32)
        end += _END.pack(0x06054B50, 0, 0, count, count, size, start, 0)
        self.offset += size + len(end)
        return directory + end


class ZipMember:
    """One deflated member of a ``ZipStream``: ``start``, then ``write`` text, then ``close``."""

    def __init__(self, archive: ZipStream, name: str, large: bool) -> None:
        self.archive = archive
        self.name = name.encode("ascii")
        self.large = large
        self.at = archive.offset
        self.crc = 0
        self.size = 0
        self.compressed = 0
        self._deflate = zlib.compressobj(archive.level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def start(self) -> bytes:
        header = _LOCAL.pack(0x04034B50, 45 if self.large else 20, _DATA_DESCRIPTOR_FLAG, _DEFLATED,
                             _DOS_TIME, _DOS_DATE, 0, 0, 0, len(self.name), 0) + self.name
        self.archive.offset += len(header)
        return header

    def write(self, text: str) -> bytes:
        data = text.encode("utf-8")
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        out = self._deflate.compress(data)
        self.compressed += len(out)
        self.archive.offset += len(out)
        return out

    def close(self, text: str = "") -> bytes:
        out = self.write(text) if text else b""
        tail = self._deflate.flush()
        self.compressed += len(tail)
        zip64 = self.size >= ZIP64_SIZE or self.compressed >= ZIP64_SIZE
        descriptor = (_DESCRIPTOR64 if zip64 else _DESCRIPTOR).pack(0x08074B50, self.crc, self.compressed,
                                                                    self.size)
        self.archive.offset += len(tail) + len(descriptor)
        self.archive._directory.append(self._directory_entry())
        return out + tail + descriptor

    def _directory_entry(self) -> bytes:
        # the ZIP64 extra holds, in this order, only the fields too large for their place
        extra = b""
        size, compressed, at = self.size, self.compressed, self.at
        if size >= ZIP64_SIZE:
            extra += struct.pack("<Q", size)
            size = _FULL32
        if compressed >= ZIP64_SIZE:
            extra += struct.pack("<Q", compressed)
            compressed = _FULL32
        if at >= ZIP64_SIZE:
            extra += struct.pack("<Q", at)
            at = _FULL32
        if extra:
            extra = struct.pack("<HH", 0x0001, len(extra)) + extra
        version = 45 if extra else 20
        return _CENTRAL.pack(0x02014B50, version, version, _DATA_DESCRIPTOR_FLAG, _DEFLATED, _DOS_TIME,
                             _DOS_DATE, self.crc, compressed, size, len(self.name), len(extra), 0, 0, 0, 0,
                             at) + self.name + extra
