"""The seed's xlsx writer, kept for the benchmark only: the "before" of docs/benchmarks.md section 6.

A verbatim copy of chalicelib/formats/xlsx.py as it was before the
streamed writer replaced it (git 2eab082), so `make bench` can measure
both side by side on the same machine in the same run. Not shipped;
XlsxWriter is in requirements-dev.txt for it. Its own docstring follows.

xlsx with bounded memory: XlsxWriter's constant-memory mode over a temp dir.

An xlsx is a zip whose directory comes last, so it cannot be streamed as it
is made. Rows go to XlsxWriter's per-sheet temp files one at a time (memory
holds one row), the workbook is zipped on close, and only then are its bytes
read back in chunks. Disk use is about the finished file plus one sheet's
XML, so in Lambda the ephemeral storage (``/tmp``) bounds the xlsx size.

While rows are written and while the workbook is zipped the generator yields
empty chunks now and then: the worker only checks for cancel and its time
budget between chunks, and would otherwise be blind for the whole build.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from itertools import islice
from typing import Any

from chalicelib.errors import ExportError
from chalicelib.formats.base import BATCH_ROWS, PLAIN, Row, RowCounter, WriteOptions, _cell

#: Excel's rows per sheet, header included. Past it, a new sheet starts.
MAX_SHEET_ROWS = 1_048_576
#: Excel's columns per sheet.
MAX_COLUMNS = 16_384
SHEET_NAME = "data"
#: Bytes per chunk when the finished workbook is read back for upload.
READ_CHUNK = 1024 * 1024
#: How often the (threaded) zip step hands control back to the worker.
CLOSE_TICK_SECONDS = 0.5
#: Integers with more digits lose precision in Excel (15 significant digits):
#: they are written as text so ids survive intact.
_EXACT_INT = 10**15

_WORKBOOK_OPTIONS = {
    "constant_memory": True,
    # the data is data: never turn text into formulas, links or numbers
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    # Python's zipfile adds ZIP64 records only where a member needs them
    "use_zip64": True,
}


def sheet_name(number: int) -> str:
    return SHEET_NAME if number == 1 else f"{SHEET_NAME} ({number})"


def _put(sheet: Any, row: int, col: int, value: Any) -> None:
    """Typed writes: a string that looks like a formula stays a string."""
    if value is None:
        return
    if isinstance(value, bool):
        sheet.write_boolean(row, col, value)
    elif (isinstance(value, int) and -_EXACT_INT < value < _EXACT_INT
          or isinstance(value, float) and math.isfinite(value)):
        sheet.write_number(row, col, value)
    elif (isinstance(value, Decimal) and value.is_finite()
          and len(value.as_tuple().digits) <= 15 and abs(value.adjusted()) < 300):
        sheet.write_number(row, col, float(value))
    elif isinstance(value, str):
        sheet.write_string(row, col, value)  # over 32,767 characters Excel's limit truncates it
    else:
        sheet.write_string(row, col, str(_cell(value)))


def write_xlsx(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter, options: WriteOptions = PLAIN
) -> Iterator[bytes]:
    """Rows in, the workbook's bytes out; the temp dir is gone when this ends, however it ends."""
    import xlsxwriter

    limit = options.sheet_rows or MAX_SHEET_ROWS
    if not 2 <= limit <= MAX_SHEET_ROWS:
        raise ValueError(f"sheet_rows must be 2..{MAX_SHEET_ROWS}, not {limit}")
    if len(columns) > MAX_COLUMNS:
        raise ExportError("too_many_columns",
                          f"An xlsx sheet holds at most {MAX_COLUMNS} columns; this export has "
                          f"{len(columns)}. Choose fewer columns or another format.")
    workdir = tempfile.mkdtemp(prefix="xlsx-", dir=tempfile.gettempdir())
    abandoned = threading.Event()
    workbook: Any = None
    closing = False
    try:
        path = os.path.join(workdir, "export.xlsx")
        workbook = xlsxwriter.Workbook(path, {**_WORKBOOK_OPTIONS, "tmpdir": workdir})
        bold = workbook.add_format({"bold": True})
        header = options.header_row(columns)
        sheets = 0
        sheet: Any = None
        row_no = limit  # no sheet yet: the first row opens one

        def new_sheet() -> Any:
            nonlocal sheets
            sheets += 1
            ws = workbook.add_worksheet(sheet_name(sheets))
            ws.write_row(0, 0, header, bold)
            ws.freeze_panes(1, 0)
            return ws

        it = iter(rows)
        while batch := list(islice(it, BATCH_ROWS)):
            for row in batch:
                if row_no >= limit:
                    sheet, row_no = new_sheet(), 1
                for col, name in enumerate(columns):
                    _put(sheet, row_no, col, row.get(name))
                row_no += 1
            on_rows(len(batch))
            yield b""
        if sheet is None:
            new_sheet()  # no rows: the file still shows its header
        closing = True
        yield from _close(workbook, workdir, abandoned)
        with open(path, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                yield chunk
    except OSError as exc:
        if _out_of_space(exc):
            raise _too_large() from exc
        raise
    finally:
        abandoned.set()
        if workbook is not None and not closing:
            _drop_row_files(workbook)
        shutil.rmtree(workdir, ignore_errors=True)


def _close(workbook: Any, workdir: str, abandoned: threading.Event) -> Iterator[bytes]:
    """Zip the workbook in a thread (zlib releases the GIL) and tick meanwhile.

    If the consumer stops listening (cancel, time budget), the caller removes
    the temp dir; the thread, once its close ends, removes it again in case it
    wrote there after that.
    """
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            workbook.close()
        except BaseException as exc:  # handed to the generator below
            errors.append(exc)
        finally:
            done.set()
            if abandoned.is_set():
                shutil.rmtree(workdir, ignore_errors=True)

    threading.Thread(target=run, name="xlsx-close", daemon=True).start()
    while not done.wait(CLOSE_TICK_SECONDS):
        yield b""
    if errors:
        if _out_of_space(errors[0]):
            raise _too_large() from errors[0]
        raise errors[0]


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC, also when XlsxWriter wrapped it (FileCreateError(OSError))."""
    for candidate in (exc, *exc.args, exc.__cause__, exc.__context__):
        if isinstance(candidate, OSError) and candidate.errno == errno.ENOSPC:
            return True
    return False


def _too_large() -> ExportError:
    return ExportError("too_large", "The xlsx file needs more temporary disk space than the worker has; "
                                    "export fewer rows or columns, or use csv or jsonl.")


def _drop_row_files(workbook: Any) -> None:
    """Close the per-sheet temp files of a workbook that will never be closed."""
    for sheet in workbook.worksheets():
        fh = getattr(sheet, "row_data_fh", None)
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
