"""The exporter interface: one module per kind, all behind this contract.

An exporter declares its params schema and formats and turns validated
params into a stream of bytes. Row-shaped kinds only supply columns and rows
and get every shared format writer for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.config import Settings
from chalicelib.formats.base import FORMATS, Format, Row


@dataclass
class BuildContext:
    """What a build hands an exporter: settings and a place to count rows."""

    settings: Settings
    rows: int = 0
    total_rows: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def count_rows(self, n: int) -> None:
        self.rows += n


class Exporter(ABC):
    kind: str = ""
    title: str = ""
    formats: tuple[str, ...] = ()
    params_schema: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "formats": list(self.formats),
            "params_schema": self.params_schema,
        }

    def format_for(self, name: str) -> Format:
        return FORMATS[name]

    def total_rows(self, params: dict[str, Any]) -> int | None:
        """The row count when it is known before the build (for ``percent``)."""
        return None

    @abstractmethod
    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        """Yield the file's bytes in chunks; raise ExportError for source problems."""


class RowExporter(Exporter):
    """A kind whose output is a table of rows, encoded by a shared writer."""

    formats = ("csv", "jsonl")

    @abstractmethod
    def open(self, params: dict[str, Any], ctx: BuildContext) -> tuple[Sequence[str], Iterator[Row]]:
        """Return the columns and a lazy iterator of rows."""

    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        columns, rows = self.open(params, ctx)
        yield from self.format_for(fmt).encode(columns, rows, ctx.count_rows)
