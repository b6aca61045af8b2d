"""CloudWatch Logs events of an allow-listed log group, as gzip'd text or jsonl.

Events are read with FilterLogEvents one page at a time (``nextToken``) and
each page is encoded and fed through one streaming gzip compressor, so memory
holds one page at most, whatever the time range holds.

The range is half-open, ``start <= timestamp < end``, so consecutive ranges
(one day, the next day) never repeat an event. It is bounded (``MAX_RANGE``)
so that one task cannot be asked to scan a log group's whole history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.clock import iso, now
from chalicelib.config import Settings
from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters.base import BuildContext, Exporter
from chalicelib.formats.base import Format
from chalicelib.formats.compression import gzip_chunks
from chalicelib.segments import Plan, Segment, even_ranges

MAX_RANGE = timedelta(days=31)
#: The range of the example in ``GET /kinds``: the last day.
EXAMPLE_RANGE = timedelta(days=1)
#: Events a FilterLogEvents page may hold (the API's maximum).
PAGE_LIMIT = 10_000
#: ISO 8601 in UTC, to the second or below, with ``Z`` or ``+00:00``.
UTC_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$"
#: What is wrong with a time that is not one (the schema's pattern and range_problem say it alike).
NOT_UTC = "must be an ISO 8601 time in UTC (ending in Z)"
#: A guess of one worker's seconds for each hour of range, for ``parallelism: "auto"``. How many
#: events a range holds is unknown until it is read; this assumes a steady, busy group of about
#: 30 events a second (108,000 an hour) read at about 15,000 events a second (FilterLogEvents
#: pages of up to 10,000 events, then encoded and gzipped): 7.2 s an hour. So a day (173 s) stays
#: one worker under a 15-minute limit, the longest range (31 days, ~5,400 s) is ~25 segments, and
#: a lower WORKER_TIMEOUT_SECONDS plans more. A quiet group is split more than it needs (a few
#: invocations more, the same events); a far busier one may need ``parallelism`` asked for.
SECONDS_PER_HOUR = 7.2
_HOUR_MS = 3_600_000



FORMATS = {
    "text": Format(name="text", extension=".log.gz", content_type="application/gzip"),
    "jsonl": Format(name="jsonl", extension=".jsonl.gz", content_type="application/gzip"),
}


def iso_ms(millis: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds and ``Z``."""
    at = datetime.fromtimestamp(millis / 1000, UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


def _parse_utc(value: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.utcoffset() == timedelta(0) else None


def range_problem(params: dict[str, Any]) -> tuple[str, str] | None:
    """The first thing wrong with ``start``/``end`` as (field, issue), or None."""
    start, end = _parse_utc(params["start"]), _parse_utc(params["end"])
    if start is None:
        return "start", NOT_UTC
    if end is None:
        return "end", NOT_UTC
    if end <= start:
        return "end", "must be later than start"
    if end - start > MAX_RANGE:
        return "end", f"must be at most {MAX_RANGE.days} days after start; split the export"
    return None


def time_range(params: dict[str, Any]) -> tuple[int, int]:
    """``start`` and ``end`` as epoch milliseconds, checked: end > start, at most MAX_RANGE."""
    problem = range_problem(params)
    if problem:
        raise ExportError("invalid_time_range", f"{problem[0]} {problem[1]}.")
    start, end = _parse_utc(params["start"]), _parse_utc(params["end"])
    assert start is not None and end is not None
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def time_slices(start_ms: int, end_ms: int, count: int) -> list[tuple[int, int]]:
    """[start, end) cut into at most ``count`` half-open slices of whole milliseconds, in order:
    each starts where the one before ends, so no event is in two slices and none is in none."""
    return [(first, last + 1) for first, last in even_ranges(start_ms, end_ms - 1, count)]


def encode_text(events: list[dict[str, Any]]) -> bytes:
    """``<iso timestamp> <stream> <message>`` a line; the message as logged (jsonl is lossless)."""
    return "".join(
        f"{iso_ms(e['timestamp'])} {e.get('logStreamName', '')} {e.get('message', '').rstrip(chr(10))}\n"
        for e in events
    ).encode("utf-8")


def encode_jsonl(events: list[dict[str, Any]]) -> bytes:
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    return "".join(
        dumps({"timestamp": iso_ms(e["timestamp"]), "stream": e.get("logStreamName"),
               "message": e.get("message"),
               "ingestion_time": iso_ms(e["ingestionTime"]) if "ingestionTime" in e else None}) + "\n"
        for e in events
    ).encode("utf-8")


ENCODERS = {"text": encode_text, "jsonl": encode_jsonl}


class LogArchiveExporter(Exporter):
    kind = "log_archive"
    title = "CloudWatch Logs archive (gzip'd text or jsonl)"
    formats = ("text", "jsonl")
    source_param = "log_group"
    #: each slice of the range is one gzip member: members concatenated are one valid gzip file
    #: whose content is the whole range's (FilterLogEvents returns events in time order)
    split_by = "time slices"
    concatenable = frozenset({"text", "jsonl"})
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["log_group", "start", "end"],
        "properties": {
            "log_group": {"type": "string", "minLength": 1, "maxLength": 512,
                          "pattern": "^[.\\-_/#A-Za-z0-9]+$",
                          "x-pattern-issue": "may contain only ASCII letters, digits, underscores "
                                             "(_), hyphens (-), slashes (/), dots (.) and number "
                                             "signs (#)"},
            "start": {"type": "string", "pattern": UTC_TIMESTAMP, "x-pattern-issue": NOT_UTC,
                      "description": "ISO 8601 UTC, inclusive"},
            "end": {"type": "string", "pattern": UTC_TIMESTAMP, "x-pattern-issue": NOT_UTC,
                    "description": f"ISO 8601 UTC, exclusive; at most {MAX_RANGE.days} days after start"},
            "filter_pattern": {"type": "string", "maxLength": 1024,
                               "description": "CloudWatch Logs filter pattern syntax"},
            "log_streams": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                            "items": {"type": "string", "minLength": 1, "maxLength": 512,
                                      "pattern": "^[^:*]+$",
                                      "x-pattern-issue": "must not contain a colon (:) or an "
                                                         "asterisk (*)"}},
        },
    }

    def deployment_sources(self, settings: Settings) -> tuple[str, ...]:
        return settings.log_groups

    def examples(self, sources: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
        """The first log group's last day, up to the next whole minute (what one usually wants).

        Times, not a lookup: any range of an existing group builds, and the
        newest day is where events are (CloudWatch refuses events older than
        14 days, so the local sample group holds the day before start-up).
        """
        if not sources:
            return []
        end = now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        return [{"log_group": sources[0], "start": iso(end - EXAMPLE_RANGE), "end": iso(end)}]

    def format_for(self, name: str) -> Format:
        return FORMATS[name]

    def preflight(self, params: dict[str, Any], settings: Settings) -> None:
        """The log group exists: one DescribeLogGroups with its name as the prefix.

        Names come back in ASCII order, so the group itself, if it exists, is
        the first of those that start with its name.
        """
        if not _group_exists(params["log_group"], probe=True):
            raise ValidationError.of([{"field": "params.log_group",
                                       "issue": "names a log group that does not exist"}],
                                     "log_group_not_found")

    def check(self, params: dict[str, Any], fmt: str) -> None:
        """A bad time range is a 400 at creation (the schema cannot compare two fields)."""
        problem = range_problem(params)
        if problem:
            raise ValidationError.of([{"field": f"params.{problem[0]}", "issue": problem[1]}])

    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        _allowed(params, ctx.settings)
        yield from self._stream(params, fmt, ctx, *time_range(params))

    # -- segmented builds: one invocation a slice of the time range -------------------------------

    def estimate_seconds(self, params: dict[str, Any], fmt: str, settings: Settings) -> float | None:
        """SECONDS_PER_HOUR for each hour of the range (a guess: see there)."""
        if range_problem(params):
            return None
        start_ms, end_ms = time_range(params)
        return (end_ms - start_ms) / _HOUR_MS * SECONDS_PER_HOUR

    def plan(self, params: dict[str, Any], fmt: str, settings: Settings, count: int) -> Plan:
        """The range in ``count`` equal slices; the group is asked once whether it exists, so a
        group gone since the create fails the task here rather than in every segment."""
        from botocore.exceptions import ClientError

        group = _allowed(params, settings)
        start_ms, end_ms = time_range(params)
        try:
            exists = _group_exists(group)
        except ClientError:  # e.g. denied DescribeLogGroups: the segments' reads say what is wrong
            exists = True
        if not exists:
            raise ExportError("log_group_not_found", f"Log group {group!r} does not exist.")
        return Plan(tuple(Segment(n, {"start": first, "end": end})
                          for n, (first, end) in enumerate(time_slices(start_ms, end_ms, count), 1)))

    def stream_segment(
        self, params: dict[str, Any], fmt: str, ctx: BuildContext, shared: dict[str, Any],
        segment: Segment, whole_file: bool,
    ) -> Iterator[bytes]:
        """The slice's events as a gzip file of its own, which is also a member of the composed one."""
        _allowed(params, ctx.settings)
        yield from self._stream(params, fmt, ctx, int(segment.spec["start"]), int(segment.spec["end"]))

    def _stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext, start_ms: int, end_ms: int
                ) -> Iterator[bytes]:
        """The events of [start_ms, end_ms), encoded in ``fmt``, as one gzip member."""
        group = params["log_group"]
        kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms,
                                  "endTime": end_ms - 1, "limit": PAGE_LIMIT}
        if params.get("filter_pattern"):
            kwargs["filterPattern"] = params["filter_pattern"]
        if params.get("log_streams"):
            kwargs["logStreamNames"] = list(params["log_streams"])
        encode = ENCODERS[fmt]

        def pages() -> Iterator[bytes]:
            for events in self._pages(kwargs):
                ctx.check()  # a filter pattern can search for minutes between matches
                ctx.count_rows(len(events))
                yield encode(events) if events else b""

        yield from gzip_chunks(pages())

    @staticmethod
    def _pages(kwargs: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        logs, kwargs, group = client("logs"), dict(kwargs), kwargs["logGroupName"]
        while True:
            try:
                page = logs.filter_log_events(**kwargs)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code, message = err.get("Code", ""), err.get("Message", "")
                if code == "ResourceNotFoundException":
                    if "stream" in message.lower():
                        raise ExportError("log_stream_not_found",
                                          f"A log stream of {group!r} does not exist: {message}") from exc
                    raise ExportError("log_group_not_found",
                                      f"Log group {group!r} does not exist.") from exc
                if code == "InvalidParameterException":
                    raise ExportError("invalid_filter_pattern",
                                      f"CloudWatch Logs rejected the request: {message}") from exc
                if code == "AccessDeniedException":
                    raise ExportError("access_denied",
                                      f"This deployment may not read log group {group!r}.") from exc
                raise
            yield page.get("events", [])
            token = page.get("nextToken")
            if not token:  # an empty page with a token only means "keep searching"
                return
            kwargs["nextToken"] = token


def _allowed(params: dict[str, Any], settings: Settings) -> str:
    """The log group to read, if this deployment may: the build's check, whatever the policy said."""
    group = str(params["log_group"])
    if group not in settings.log_groups:
        raise ExportError("log_group_not_allowed",
                          f"Log group {group!r} is not on this deployment's log allow-list.")
    return group


def _group_exists(group: str, probe: bool = False) -> bool:
    """One DescribeLogGroups with the group's name as the prefix.

    Names come back in ASCII order, so the group itself, if it exists, is
    the first of those that start with its name.
    """
    from chalicelib.adapters.aws import client

    found = client("logs", probe=probe).describe_log_groups(
        logGroupNamePrefix=group, limit=1).get("logGroups", [])
    return bool(found) and found[0].get("logGroupName") == group
