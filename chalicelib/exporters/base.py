"""The exporter interface: one module per kind, all behind this contract.

An exporter declares its params schema and formats and turns validated
params into a stream of bytes. Row-shaped kinds only supply columns and rows
and get every shared format writer, and the output options, for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chalicelib.config import Settings
from chalicelib.errors import ValidationError
from chalicelib.formats.base import FORMATS, Format, Row
from chalicelib.formats.compression import GZIP_CONTENT_TYPE, GZIP_EXTENSION, gzip_chunks
from chalicelib.formats.options import GZIP, compression, misfits, with_options, write_options
from chalicelib.segments import MAX_SEGMENTS, PARTS, SINGLE, Plan, Segment


def _go_on() -> None:
    """Outside a build nothing ever asks an exporter to stop."""


@dataclass
class BuildContext:
    """What a build hands an exporter: settings, a place to count rows and to leave warnings."""

    settings: Settings
    rows: int = 0
    #: ``total_rows(params)``'s answer; an exporter that learns the total (or an
    #: estimate of it) from its source may set it in ``open``/``stream``
    total_rows: int | None = None
    #: xlsx rows per sheet, header included; None is Excel's limit (lowered by tests)
    sheet_rows: int | None = None
    #: raises when the build must stop (cancel, lost lease, time budget); an exporter
    #: that can read a long time without yielding a byte calls it between source pages
    check: Callable[[], None] = _go_on

    #: what the file's owner should know about a build that succeeded (``warn``)
    warnings: list[dict[str, str]] = field(default_factory=list)
    #: a segment's facts for the finalizer (``Exporter.segment_notes``), e.g. the names it saw
    notes: dict[str, Any] = field(default_factory=dict)

    def count_rows(self, n: int) -> None:
        self.rows += n

    def warn(self, code: str, field_path: str, message: str) -> None:
        """Record something the owner should know, e.g. a requested column no row had.

        The task keeps these as ``warnings`` once the file is stored: the
        export is still what was asked for, but maybe not what was meant.
        """
        self.warnings.append({"code": code, "field": field_path, "message": message})


class Output(NamedTuple):
    """What the stored file is: decided from params and format, at creation and at build alike."""

    extension: str
    content_type: str


class Exporter(ABC):
    kind: str = ""
    title: str = ""
    formats: tuple[str, ...] = ()
    params_schema: dict[str, Any] = {}
    #: the param that names what the kind reads (a table, a bucket, a log group), if any:
    #: the access policy decides who may read which
    source_param: str | None = None
    #: how the kind splits its work across workers ("row ranges"...); None: one worker builds it
    split_by: str | None = None
    #: formats whose segments, concatenated, are the file one worker would build
    concatenable: frozenset[str] = frozenset()

    def deployment_sources(self, settings: Settings) -> tuple[str, ...]:
        """Every source this deployment may read for the kind (its allow-list)."""
        return ()

    def examples(self, sources: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
        """``params`` that work on this deployment, offered as ``examples`` in ``GET /kinds``.

        ``sources`` are what the caller may read of the kind's allow-list, in
        its order. Every example must pass the kind's schema and build; a kind
        that cannot offer one (nothing to read) returns none rather than one
        that would be refused.
        """
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "formats": list(self.formats),
            "params_schema": self.params_schema,
            "split": self.describe_split(),
        }

    # -- segmented builds ------------------------------------------------------
    def outputs(self, fmt: str) -> tuple[str, ...]:
        """The outputs a segmented build of ``fmt`` may have: none if the kind cannot split."""
        if self.split_by is None:
            return ()
        return (SINGLE, PARTS) if fmt in self.concatenable else (PARTS,)

    def describe_split(self) -> dict[str, Any] | None:
        """``GET /kinds``' word on splitting: how, and into which outputs per format."""
        if self.split_by is None:
            return None
        return {"by": self.split_by, "outputs": {f: list(self.outputs(f)) for f in self.formats},
                "max_segments": MAX_SEGMENTS}

    def estimate_seconds(self, params: dict[str, Any], fmt: str, settings: Settings) -> float | None:
        """Roughly how long one worker would take (what ``parallelism: "auto"`` divides); None: unknown."""
        return None

    def plan(self, params: dict[str, Any], fmt: str, settings: Settings, count: int) -> Plan:
        """At most ``count`` segments covering the export, in the file's order."""
        raise NotImplementedError(f"{self.kind} cannot split")

    def stream_segment(
        self, params: dict[str, Any], fmt: str, ctx: BuildContext, shared: dict[str, Any],
        segment: Segment, whole_file: bool,
    ) -> Iterator[bytes]:
        """Yield one segment's bytes; ``whole_file``: a file of its own (a part), else a piece of
        the composed file (a csv header only in the first)."""
        raise NotImplementedError(f"{self.kind} cannot split")

    def segment_notes(self, ctx: BuildContext) -> dict[str, Any] | None:
        """What one segment's build keeps on its segment for the finalizer: small JSON (the task's
        item holds every segment), or None. By default the warnings it would have left on a task."""
        return {"warnings": ctx.warnings} if ctx.warnings else None

    def segment_warnings(
        self, params: dict[str, Any], shared: dict[str, Any], notes: Sequence[dict[str, Any] | None],
    ) -> list[dict[str, str]]:
        """The task's ``warnings`` from its segments' notes (in segment order), once all succeeded.

        By default every distinct warning a segment left, first seen first: right
        for a warning about the params, wrong for one about what a segment read
        (a column one segment lacks may be in the next), which a kind then merges itself.
        """
        merged: list[dict[str, str]] = []
        for note in notes:
            for warning in (note or {}).get("warnings", []):
                if warning not in merged:
                    merged.append(dict(warning))
        return merged

    def format_for(self, name: str) -> Format:
        return FORMATS[name]

    def output(self, params: dict[str, Any], fmt: str) -> Output:
        """File name extension and content type; the one place both are decided."""
        spec = self.format_for(fmt)
        return Output(spec.extension, spec.content_type)

    def check(self, params: dict[str, Any], fmt: str) -> None:  # noqa: B027 - optional hook
        """Refuse, with a ValidationError, params that pass the schema but not with this format."""

    def preflight(self, params: dict[str, Any], settings: Settings) -> None:  # noqa: B027 - optional hook
        """Refuse at create what the build would fail on and the source tells cheaply.

        A call or two to the source at most (does the table exist, does the
        prefix select an object), so a mistake is a 400 naming the field
        (``ValidationError.of``) rather than a task that fails later, or one
        that succeeds with nothing. Runs after the schema, ``check`` and the
        access policy (a source off the allow-list is never asked), before
        the task is stored. Any other exception, such as a source that is
        throttled, denies the API's role or does not answer, lets the create
        go on: the build, with its retries, is the judge and reports it.
        """

    def total_rows(self, params: dict[str, Any]) -> int | None:
        """The row count when it is known before the build (for ``percent``)."""
        return None

    @abstractmethod
    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        """Yield the file's bytes in chunks; raise ExportError for source problems."""


class RowExporter(Exporter):
    """A kind whose output is a table of rows, encoded by a shared writer.

    Its ``params_schema`` is the kind's own plus the output options
    (``formats.options``), merged when the subclass is defined, so the
    catalogue and the validator both see one schema.
    """

    formats = ("csv", "jsonl", "xlsx")
    params_schema = with_options({"type": "object"})
    concatenable = frozenset({"csv", "jsonl"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("params_schema")
        if own is not None:
            cls.params_schema = with_options(own)

    @abstractmethod
    def open(self, params: dict[str, Any], ctx: BuildContext) -> tuple[Sequence[str], Iterator[Row]]:
        """Return the columns and a lazy iterator of rows."""

    def output(self, params: dict[str, Any], fmt: str) -> Output:
        plain = super().output(params, fmt)
        if compression(params) == GZIP:
            return Output(plain.extension + GZIP_EXTENSION, GZIP_CONTENT_TYPE)
        return plain

    def check(self, params: dict[str, Any], fmt: str) -> None:
        details = misfits(params, self.format_for(fmt))
        if details:
            raise ValidationError.of(details)

    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        columns, rows = self.open(params, ctx)
        yield from self.write(columns, rows, params, fmt, ctx)

    def open_segment(
        self, params: dict[str, Any], ctx: BuildContext, shared: dict[str, Any], segment: Segment,
    ) -> tuple[Sequence[str], Iterator[Row]]:
        """The columns (the plan's, the same in every segment) and the segment's rows."""
        raise NotImplementedError(f"{self.kind} cannot split")

    def stream_segment(
        self, params: dict[str, Any], fmt: str, ctx: BuildContext, shared: dict[str, Any],
        segment: Segment, whole_file: bool,
    ) -> Iterator[bytes]:
        columns, rows = self.open_segment(params, ctx, shared, segment)
        yield from self.write(columns, rows, params, fmt, ctx,
                              header=whole_file or segment.number == 1)

    def write(
        self, columns: Sequence[str], rows: Iterator[Row], params: dict[str, Any], fmt: str,
        ctx: BuildContext, header: bool = True,
    ) -> Iterator[bytes]:
        """Encode ``rows`` in ``fmt`` with the output options: for a kind whose
        ``stream`` needs the format before it opens its source."""
        encode = self.format_for(fmt).encode
        assert encode is not None, f"{fmt} is not a row format"
        chunks = encode(columns, rows, ctx.count_rows,
                        write_options(params, ctx.sheet_rows, header=header))
        if compression(params) == GZIP:
            chunks = gzip_chunks(chunks)
        yield from chunks
