"""The writer interface and registry.

A writer turns an iterator of rows into an iterator of byte chunks of
bounded size, so the uploader never holds more than one part in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

Row = Mapping[str, Any]
RowCounter = Callable[[int], None]

#: Rows encoded per chunk: large enough to amortise Python overhead, small
#: enough that a chunk stays far below one upload part.
BATCH_ROWS = 2000


class Encoder(Protocol):
    def __call__(
        self, columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter
    ) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str
    encode: Encoder


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


def encode_csv(columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    it = iter(rows)
    while True:
        batch = list(islice(it, BATCH_ROWS))
        if batch:
            writer.writerows([_cell(row.get(c)) for c in columns] for row in batch)
        chunk = buf.getvalue()
        if chunk:
            yield chunk.encode("utf-8")
            buf.seek(0)
            buf.truncate()
        if not batch:
            return
        on_rows(len(batch))


def encode_jsonl(
    columns: Sequence[str], rows: Iterable[Row], on_rows: RowCounter
) -> Iterator[bytes]:
    """One JSON object a line; with ``columns`` the keys follow their order."""
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


FORMATS: dict[str, Format] = {
    "csv": Format("csv", ".csv", "text/csv; charset=utf-8", encode_csv),
    "jsonl": Format("jsonl", ".jsonl", "application/x-ndjson; charset=utf-8", encode_jsonl),
}


def get_format(name: str) -> Format:
    return FORMATS[name]
