"""The dynamodb_table row path on recorded Scan pages: what turning items into rows costs.

``record`` scans the local stack's ``demo-users`` table (``local.seed``, on
the bench's moto server) once, segment by segment as the worker does, and
keeps each Scan response's HTTP body: items in DynamoDB's typed JSON. The
timed runs (``run``, one variant in a fresh process) replay those bodies,
repeated, through the worker's own code:

- botocore's JSON parser, as the client parses a Scan response;
- the ``after-call`` event of the worker's boto3 resource client, whose
  handler (``TransformationInjector``) walks the response's shape and
  deserializes every attribute value with ``TypeDeserializer``, as
  ``Table.scan`` does in ``_segment_pages``;
- ``DynamoDBTableExporter._rows`` (``_plain`` on every item) and
  ``RowExporter.write`` with the columns the exporter would choose
  (``key_first`` of ``sample_names`` of the first page).

A variant leaves steps out by pausing its clock around them (``Stopwatch``):
a variant that does not time the parser gets each page as botocore parsed
it, unpickled afresh while the clock is stopped (the deserializer changes a
page in place; unpickling is several times quicker than parsing again),
page by page, so memory stays a few pages as in the worker. The encoded
bytes are hashed with the clock stopped too, and every variant of a format
must give the same md5.

Beside it, as a side experiment, readers the exporter does not use:
``TypeDeserializer`` called per attribute without the resource's walk over
the output shape; ``plain_item``, typed JSON straight to the row's values in
one pass; and botocore's parser told to leave attribute values as the JSON
has them (``raw_attribute_parser``), which skips its own walk over every
value, followed by ``plain_item``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import Any

from bench.harness import ROOT

#: Where ``record`` keeps the recorded pages (``.local`` is not committed).
PAGES_FILE = ROOT / ".local" / "bench" / "dynamodb-scan-pages.json"
TABLE = "demo-users"
#: Response headers the parser reads (the request id goes into ResponseMetadata).
_KEPT_HEADERS = ("content-type", "x-amzn-requestid", "x-amz-crc32")

#: The variants that take no format: they drain the rows (or pages) and encode nothing.
CONVERT_ONLY = ("json", "parse", "rawparse", "deserialize", "convert", "direct", "onepass")
#: The variants that encode: the rows end in ``RowExporter.write``.
ENCODING = ("worker", "raw_worker", "typed", "encode", "onepass_encode")
#: The worker's path end to end, the network answered from the recording (``Served``): the
#: exporter's ``stream`` with the typed reader it replaced (before) and with its own (after),
#: and the peer a developer writes by hand. They write bytes of their own (the peer: other bytes).
END_TO_END = ("before", "after", "peer")

Typed = dict[str, Any]
Page = list[dict[str, Any]]


# -- recording -------------------------------------------------------------------------------------


def record(segments: int = 4, path: str = str(PAGES_FILE)) -> dict[str, Any]:
    """Seed ``demo-users`` on the endpoint (``local.seed``) and keep its Scan pages' bodies.

    The scan is split in ``segments`` as the worker's is (``SCAN_SEGMENTS``),
    read segment after segment, the order in which ``parallel_pages`` hands
    the pages on. The bodies are written again as compact UTF-8 JSON: moto
    escapes every non-ASCII character (``\\u4f1f``), which DynamoDB does not.
    """
    import os

    import boto3

    from chalicelib.adapters.aws import region_name
    from chalicelib.exporters.dynamodb_table import source_shape
    from local.seed import seed_demo_table

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    items = seed_demo_table(endpoint, region_name(), TABLE)
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region_name())
    bodies: list[dict[str, Any]] = []

    def keep(http_response: Any, **_: Any) -> None:
        raw = json.loads(http_response.content)
        headers = {k.lower(): v for k, v in http_response.headers.items() if k.lower() in _KEPT_HEADERS}
        bodies.append({"body": json.dumps(raw, ensure_ascii=False, separators=(",", ":")),
                       "moto_bytes": len(http_response.content), "headers": headers})

    client.meta.events.register("after-call.dynamodb.Scan", keep)
    client.meta.events.register("after-call.dynamodb.DescribeTable", keep)
    pages: list[dict[str, Any]] = []
    for segment in range(segments):
        kwargs: dict[str, Any] = {"TableName": TABLE, "Segment": segment, "TotalSegments": segments}
        while True:
            got = client.scan(**kwargs)
            pages.append({"segment": segment, "items": got["Count"], **bodies.pop()})
            if "LastEvaluatedKey" not in got:
                break
            kwargs["ExclusiveStartKey"] = got["LastEvaluatedKey"]
    keys = list(source_shape(client.describe_table(TableName=TABLE)["Table"], None).keys)
    described = bodies.pop()
    recording = {"table": TABLE, "keys": keys, "segments": segments, "seeded": items, "pages": pages,
                 "describe": {"body": described["body"], "headers": described["headers"]}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(recording, ensure_ascii=False), encoding="utf-8")
    return {"path": path, **describe(recording)}


def describe(recording: dict[str, Any]) -> dict[str, Any]:
    """What the recorded pages hold: items, bytes, and attribute values by DynamoDB type."""
    types: dict[str, int] = {}

    def count(value: Typed) -> None:
        for kind, inner in value.items():
            types[kind] = types.get(kind, 0) + 1
            if kind == "L":
                for v in inner:
                    count(v)
            elif kind == "M":
                for v in inner.values():
                    count(v)

    items = 0
    for page in recording["pages"]:
        for item in json.loads(page["body"])["Items"]:
            items += 1
            for value in item.values():
                count(value)
    return {"table": recording["table"], "items": items, "pages": len(recording["pages"]),
            "segments": recording["segments"],
            "body_bytes": sum(len(p["body"].encode("utf-8")) for p in recording["pages"]),
            "moto_bytes": sum(p["moto_bytes"] for p in recording["pages"]),
            "page_items": [p["items"] for p in recording["pages"]], "types": types,
            "keys": recording["keys"]}


# -- the typed path the exporter used to read with -------------------------------------------------


def typed_segment_pages(table_name: str, scan_kwargs: dict[str, Any], convert: Any = True) -> Iterator[Page]:
    """``dynamodb_table._segment_pages`` as it was before it read DynamoDB's JSON itself (git 1faf58a^).

    boto3's resource ``Table.scan`` (botocore's parse, then the resource's
    ``TypeDeserializer``), a resource of its own in each thread, then ``_plain``
    on each item (which ``_rows`` did); with ``convert`` None, boto3's items as
    they are (only their names are read). The bench's "before" and the
    integration test of the same bytes (tests/integration/test_dynamodb_rows.py)
    swap it in for the exporter's reader: the old path, end to end.
    """
    import boto3
    from botocore.exceptions import ClientError

    from chalicelib.adapters.aws import region_name
    from chalicelib.exporters.dynamodb_table import _plain, _source_error

    table = boto3.session.Session().resource("dynamodb", region_name=region_name()).Table(table_name)
    kwargs = dict(scan_kwargs)
    while True:
        try:
            page = table.scan(**kwargs)
        except ClientError as exc:
            raise _source_error(exc, table_name, kwargs.get("IndexName")) from exc
        items = page.get("Items", [])
        yield [_plain(item) for item in items] if convert else items
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- the worker's path end to end: the recorded responses served at botocore's before-send ---------


class _Body:
    """A recorded body as an ``AWSResponse``'s raw stream."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class Served:
    """The recording answered to every botocore client (and the exporter's reader), no network.

    Each scan segment's recorded pages are served ``repeat`` times over, chained
    by a LastEvaluatedKey that says which page comes next (the last has none);
    an unsegmented scan (the peer's) gets every segment's pages in turn. Bodies,
    with their CRC32, are made here, before any clock starts; DescribeTable gets
    the recorded answer, and an S3 PutObject (the peer's upload) a 200.
    """

    def __init__(self, recording: dict[str, Any], repeat_pages: int) -> None:
        per_segment: dict[int | None, list[dict[str, Any]]] = {}
        for page in recording["pages"]:
            per_segment.setdefault(page["segment"], []).append(json.loads(page["body"]))
        segments = sorted(k for k in per_segment if k is not None)
        per_segment[None] = [body for segment in segments for body in per_segment[segment]]
        self.streams = {seg: self._chain(seg, bodies * repeat_pages) for seg, bodies in per_segment.items()}
        self.describe = self._response(recording["describe"]["body"].encode("utf-8"))
        self.items = sum(p["items"] for p in recording["pages"]) * repeat_pages
        self.answered = 0

    @staticmethod
    def _chain(segment: int | None, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chained = []
        for i, body in enumerate(bodies):
            body = {k: v for k, v in body.items() if k != "LastEvaluatedKey"}
            if i + 1 < len(bodies):
                body["LastEvaluatedKey"] = {"id": {"S": f"replay:{segment}:{i + 1}"}}
            chained.append(Served._response(json.dumps(body, ensure_ascii=False, separators=(",", ":"))
                                            .encode("utf-8")))
        return chained

    @staticmethod
    def _response(data: bytes) -> dict[str, Any]:
        import zlib

        return {"data": data, "headers": {"content-type": "application/x-amz-json-1.0",
                                          "x-amzn-requestid": "replay", "x-amz-crc32": str(zlib.crc32(data))}}

    def answer(self, request: Any, **_: Any) -> Any:
        """A ``before-send`` handler: the recorded answer to ``request``."""
        from botocore.awsrequest import AWSResponse

        self.answered += 1
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else target
        if target.endswith(".Scan"):
            body = json.loads(request.body)
            start = body.get("ExclusiveStartKey")
            index = int(start["id"]["S"].rsplit(":", 1)[1]) if start else 0
            served = self.streams[body.get("Segment")][index]
        elif target.endswith(".DescribeTable"):
            served = self.describe
        elif request.method == "PUT":  # the peer's upload
            return AWSResponse(request.url, 200, {"ETag": '"replay"'}, _Body(b""))
        else:
            raise AssertionError(f"nothing recorded for {request.method} {request.url} {target}")
        return AWSResponse(request.url, 200, served["headers"], _Body(served["data"]))

    @contextmanager
    def everywhere(self) -> Iterator[None]:
        """Answer every botocore client made from now on (the segment threads' own sessions too)."""
        import botocore.session

        from chalicelib.adapters import aws

        original = botocore.session.Session.create_client

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register_first("before-send", self.answer)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
        aws.reset()
        try:
            yield
        finally:
            botocore.session.Session.create_client = original  # type: ignore[method-assign]
            aws.reset()


def peer_export(table: Any, s3: Any, bucket: str, key: str) -> bytes:
    """What a developer writes by hand: ``Table.scan`` page by page into ``csv.DictWriter``, one upload.

    The columns are the first item's names, sorted; Decimals, sets and
    binaries written as ``str`` makes them (not the exporter's bytes).
    """
    import csv
    import io

    out = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        for item in page["Items"]:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=sorted(item), extrasaction="ignore")
                writer.writeheader()
            writer.writerow(item)
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    data = out.getvalue().encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def run_end_to_end(variant: str, repeat_pages: int, fmt: str, path: str = str(PAGES_FILE),
                   profile: bool = False) -> dict[str, Any]:
    """``before``, ``after`` or ``peer`` on the recording, in this process (see ``END_TO_END``).

    ``before`` and ``after`` are the exporter's own ``stream`` with the
    recording's segments (the worker's threads, ``parallel_pages``), the
    reader being ``typed_segment_pages`` or the exporter's; the clock runs from
    the DescribeTable to the last byte (hashed off the clock). The clients
    exist before the clock starts, as a warm worker's do; the typed reader's
    segment threads make their own, as they did. ``profile``: cProfile's top
    functions by own time, for the report's "where the time goes" (read in one
    segment, the main thread's: cProfile does not see other threads).
    """
    import os
    from unittest import mock

    import boto3

    from chalicelib.adapters import aws
    from chalicelib.adapters.dynamodb_scan import scanner
    from chalicelib.config import Settings
    from chalicelib.exporters import BuildContext, dynamodb_table, get_exporter

    recording = json.loads(Path(path).read_text(encoding="utf-8"))
    served = Served(recording, repeat_pages)
    # nothing is sent anywhere: a signature needs keys all the same, and none are looked for
    dummy = {"AWS_ACCESS_KEY_ID": "replay", "AWS_SECRET_ACCESS_KEY": "replay", "AWS_SESSION_TOKEN": "replay"}
    result: dict[str, Any] = {"variant": variant, "fmt": fmt, "items": served.items}
    clock = Stopwatch()
    with mock.patch.dict(os.environ, dummy), served.everywhere():
        os.environ.pop("AWS_ENDPOINT_URL", None)
        ctx = BuildContext(Settings.from_env())
        exporter = get_exporter("dynamodb_table")
        # cProfile sees only the thread it runs in: the profile reads in one segment, in this thread
        params = {"table": recording["table"], "segments": 1 if profile else recording["segments"]}
        if variant == "peer":
            table = boto3.session.Session().resource("dynamodb", region_name=aws.region_name()).Table(
                recording["table"])
            s3 = boto3.session.Session().client("s3", region_name=aws.region_name())
        else:
            aws.client("dynamodb"), aws.resource("dynamodb"), scanner()
            exporter.format_for(fmt)
            if fmt == "xlsx":
                import chalicelib.formats.xlsx  # noqa: F401
        reader = typed_segment_pages if variant == "before" else dynamodb_table._segment_pages
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        with mock.patch.object(dynamodb_table, "_segment_pages", reader):
            clock.start()
            if profiler:
                profiler.enable()
            if variant == "peer":
                data = peer_export(table, s3, "bench", "peer.csv")
                with clock.paused():
                    result.update(size=len(data), md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
                                  rows=data.count(b"\r\n") - 1)
            elif variant in ("before", "after"):
                result.update(_encoded(exporter.stream(params, fmt, ctx), clock))
                result["rows"] = ctx.rows
            else:
                raise ValueError(f"no variant {variant!r}")
            if profiler:
                profiler.disable()
            clock.stop()
    result.update(seconds=clock.wall, cpu_seconds=clock.cpu, requests=served.answered)
    if profiler:
        result["profile"] = _top_functions(profiler)
    return result


def _top_functions(profiler: Any, top: int = 14) -> list[dict[str, Any]]:
    """cProfile's functions by own time: name, own seconds, share of all own time."""
    import pstats

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    rows = sorted(((f"{Path(file).name}:{line}({name})" if file != "~" else name, tt)
                   for (file, line, name), (_, _, tt, _, _) in stats.items()), key=lambda r: -r[1])
    return [{"function": f, "seconds": t, "share": t / total} for f, t in rows[:top]]


# -- the side experiment's converter ---------------------------------------------------------------


def _plain_decimal(value: Decimal) -> int | float:
    """What ``_plain`` makes of a Decimal."""
    return int(value) if value == value.to_integral_value() else float(value)


def _plain_number(text: str) -> int | float:
    """An ``N`` as ``_plain(TypeDeserializer().deserialize(...))`` gives it, without the Decimal
    for an integer (int() accepts exactly the integer texts Decimal does, and gives their value)."""
    from boto3.dynamodb.types import DYNAMODB_CONTEXT

    try:
        return int(text)
    except ValueError:
        return _plain_decimal(DYNAMODB_CONTEXT.create_decimal(text))


def _text(data: bytes | str) -> str:
    """A binary as ``_plain`` writes it: base64 text (DynamoDB's JSON has it so already)."""
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


def plain_value(value: Typed) -> Any:
    """A typed attribute value straight to the row's Python value: one pass, no Decimal for integers.

    The same value, of the same type, as the worker's ``_plain`` of
    ``TypeDeserializer().deserialize(value)`` (tests/unit/test_bench_dynamodb_rows.py).
    """
    if "S" in value:
        return value["S"]
    if "N" in value:
        return _plain_number(value["N"])
    if "BOOL" in value:
        return value["BOOL"]
    if "NULL" in value:
        return None
    if "L" in value:
        return [plain_value(v) for v in value["L"]]
    if "M" in value:
        return {k: plain_value(v) for k, v in value["M"].items()}
    if "SS" in value:
        return sorted(set(value["SS"]))
    if "NS" in value:
        from boto3.dynamodb.types import DYNAMODB_CONTEXT

        return sorted(map(_plain_decimal, set(map(DYNAMODB_CONTEXT.create_decimal, value["NS"]))), key=str)
    # bytes once botocore has parsed the value; the JSON's base64 text as it is otherwise
    if "B" in value:
        return _text(value["B"])
    if "BS" in value:
        return sorted(map(_text, set(value["BS"])))
    raise TypeError(f"not a DynamoDB attribute value: {sorted(value)}")


def plain_item(item: dict[str, Typed]) -> dict[str, Any]:
    """A typed item straight to the row the worker's ``_rows`` would yield for it."""
    return {name: plain_value(value) for name, value in item.items()}


def raw_attribute_parser() -> Any:
    """botocore's JSON parser, except that attribute values stay as the JSON has them.

    botocore rebuilds every attribute value while it walks the output shape
    (a structure of ten optional members); this one returns the JSON's own
    dict there, and ``plain_item`` reads it. The hook is botocore's private
    ``_parse_shape``; a client would get the parser through its session's
    ``response_parser_factory`` component. A side experiment only.
    """
    from botocore.parsers import JSONParser

    class RawAttributeValues(JSONParser):
        def _parse_shape(self, shape: Any, node: Any) -> Any:
            if shape is not None and shape.name == "AttributeValue":
                return node
            return super()._parse_shape(shape, node)

    return RawAttributeValues()


# -- timing ----------------------------------------------------------------------------------------


class Stopwatch:
    """Wall and CPU time of a span, less the parts spent in ``paused()``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._since: tuple[float, float] | None = None

    def start(self) -> None:
        self._since = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        assert self._since is not None, "the stopwatch is not running"
        wall, cpu = self._since
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._since = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()


# -- the timed runs --------------------------------------------------------------------------------


class Replay:
    """The recorded Scan responses, and the worker's parser and deserializer to replay them with."""

    def __init__(self, recording: dict[str, Any], repeat_pages: int) -> None:
        from botocore.parsers import create_parser

        from chalicelib.adapters.aws import resource
        from chalicelib.exporters.dynamodb_table import key_first, sample_names

        self.keys: list[str] = recording["keys"]
        self.table: str = recording["table"]
        self.responses = [{"status_code": 200, "headers": p["headers"], "body": p["body"].encode("utf-8")}
                          for p in recording["pages"]]
        self.repeat = repeat_pages
        self.items = sum(p["items"] for p in recording["pages"]) * repeat_pages
        # the order the worker writes the repeated pages in: each segment's, repeated, then the next's
        segments = [p["segment"] for p in recording["pages"]]
        self.order = [i for segment in dict.fromkeys(segments) for _ in range(repeat_pages)
                      for i, s in enumerate(segments) if s == segment]
        # the worker's resource client: its after-call handlers are what Table.scan runs on a page
        scan_client = resource("dynamodb").meta.client
        self._events = scan_client.meta.events
        self._scan = scan_client.meta.service_model.operation_model("Scan")
        self._parser = create_parser(scan_client.meta.service_model.metadata["protocol"])
        self._raw_parser = raw_attribute_parser()
        #: each response as botocore parses it, to be unpickled afresh off the clock
        self._parsed = [pickle.dumps(self.parse(r), pickle.HIGHEST_PROTOCOL) for r in self.responses]
        first = self.deserialized(self.parse(self.responses[0]))
        self.columns = key_first(self.keys, sample_names(first))

    def parse(self, response: dict[str, Any], raw: bool = False) -> dict[str, Any]:
        """botocore's parse of one Scan response: typed items (``raw``: as the JSON has them)."""
        return (self._raw_parser if raw else self._parser).parse(response, self._scan.output_shape)

    def in_order(self, per_response: list[Any]) -> Iterator[Any]:
        """One thing per recorded response, ``repeat`` times, in the worker's order (``order``)."""
        return (per_response[i] for i in self.order)

    def deserialized(self, parsed: dict[str, Any]) -> Page:
        """What ``Table.scan`` returns for a parsed response: its items, deserialized in place."""
        self._events.emit(f"after-call.{self._scan.service_model.service_id.hyphenize()}.Scan",
                          http_response=None, parsed=parsed, model=self._scan, context={})
        return list(parsed.get("Items", []))

    def parsed_pages(self, clock: Stopwatch, time_parse: bool, raw: bool = False) -> Iterator[dict[str, Any]]:
        """Every response parsed, in order, ``repeat`` times.

        With ``time_parse`` each is parsed on the clock; otherwise botocore's
        parse of it is unpickled, off the clock (``raw`` needs ``time_parse``).
        """
        if not time_parse:
            assert not raw, "the raw parser is only timed"
            for parsed in self.in_order(self._parsed):
                with clock.paused():
                    page = pickle.loads(parsed)
                yield page
            return
        for response in self.in_order(self.responses):
            yield self.parse(response, raw)

    def pages(self, clock: Stopwatch, time_parse: bool) -> Iterator[Page]:
        """The pages ``_segment_pages`` would yield: parsed, then deserialized by the resource's handler."""
        for parsed in self.parsed_pages(clock, time_parse):
            yield self.deserialized(parsed)

    def direct_pages(self, clock: Stopwatch) -> Iterator[Page]:
        """Side experiment: ``TypeDeserializer`` on each attribute value, without the shape walk."""
        from boto3.dynamodb.types import TypeDeserializer

        deserialize = TypeDeserializer().deserialize
        for parsed in self.parsed_pages(clock, time_parse=False):
            yield [{k: deserialize(v) for k, v in item.items()} for item in parsed.get("Items", [])]

    def plain_rows(self) -> list[list[dict[str, Any]]]:
        """The recorded items as the worker's rows, a list a response, made once (no clock): what
        the encoders get."""
        from chalicelib.exporters.dynamodb_table import _plain

        return [[_plain(item) for item in self.deserialized(self.parse(response))]
                for response in self.responses]


def _worker_rows(replay: Replay, pages: Iterator[Page], ctx: Any) -> Iterator[dict[str, Any]]:
    """The typed path's rows: each boto3 item through ``_plain``, then the exporter's own row loop
    (``DynamoDBTableExporter._rows``)."""
    from chalicelib.exporters.dynamodb_table import ColumnReport, DynamoDBTableExporter, _plain

    report = ColumnReport(replay.table, None, [], replay.columns, False, all_columns=False)
    pages = ([_plain(item) for item in page] for page in pages)
    first = next(pages)
    return DynamoDBTableExporter._rows(first, pages, ctx, report, None)  # type: ignore[arg-type]


def _onepass_rows(
    replay: Replay, clock: Stopwatch, ctx: Any, time_parse: bool = False, raw: bool = False
) -> Iterator[dict[str, Any]]:
    """Side experiment: ``_rows`` as it would read with ``plain_item`` on the low-level client's pages."""
    seen: set[str] = set()
    for parsed in replay.parsed_pages(clock, time_parse, raw):
        ctx.check()
        for item in parsed.get("Items", []):
            seen.update(item)
            yield plain_item(item)


def _drain(items: Iterable[Any]) -> int:
    count = 0
    for _ in items:
        count += 1
    return count


def run(
    variant: str, repeat_pages: int, fmt: str | None = None, path: str = str(PAGES_FILE),
    profile: bool = False,
) -> dict[str, Any]:
    """One variant over the recorded pages repeated ``repeat_pages`` times, in this process.

    - json: ``json.loads`` of every body, for scale: the parse without botocore's walk;
    - parse: botocore's parse of every response, nothing more;
    - deserialize: parsed pages (parse off the clock) through the resource's
      after-call handler, the items then dropped;
    - convert: the same, then the exporter's ``_rows`` (``_plain``): the
      rows the encoder would get, dropped;
    - rawparse: ``raw_attribute_parser``'s parse of every response (side experiment);
    - direct, onepass: side experiments, converters the exporter does not use;
    - typed: ``convert`` then ``RowExporter.write`` in ``fmt``;
    - worker: ``typed`` with the parse on the clock: the worker's CPU per item
      between the HTTP body and the encoded bytes;
    - encode: the same rows made beforehand (the recorded items through the
      worker's path, off the clock, repeated), encoded only;
    - onepass_encode: ``onepass`` rows encoded in ``fmt``;
    - raw_worker: ``rawparse`` then ``onepass_encode``, all on the clock: the side
      experiment's counterpart of ``worker``;
    - before, after, peer: the worker's path end to end (``run_end_to_end``).
    """
    from chalicelib.config import Settings
    from chalicelib.exporters import BuildContext, RowExporter, get_exporter

    if variant in END_TO_END:
        if fmt is None:
            raise ValueError(f"variant {variant!r} needs a format")
        return run_end_to_end(variant, repeat_pages, fmt, path, profile)
    recording = json.loads(Path(path).read_text(encoding="utf-8"))
    replay = Replay(recording, repeat_pages)
    exporter = get_exporter("dynamodb_table")
    assert isinstance(exporter, RowExporter)
    ctx = BuildContext(Settings.from_env())
    params = {"table": replay.table}
    clock = Stopwatch()
    ready: list[list[dict[str, Any]]] = replay.plain_rows() if variant == "encode" else []
    if fmt is not None:
        exporter.format_for(fmt)  # imports the xlsx writer, if any, before the clock starts
        if fmt == "xlsx":
            import chalicelib.formats.xlsx  # noqa: F401
    rows: Iterator[dict[str, Any]] | None = None
    result: dict[str, Any] = {"variant": variant, "fmt": fmt, "items": replay.items,
                              "columns": replay.columns}
    clock.start()
    if variant == "json":
        bodies = (r["body"] for r in replay.in_order(replay.responses))
        result["pages"] = _drain(map(json.loads, bodies))
    elif variant in ("parse", "rawparse"):
        result["pages"] = _drain(replay.parsed_pages(clock, time_parse=True, raw=variant == "rawparse"))
    elif variant == "deserialize":
        result["pages"] = _drain(replay.pages(clock, time_parse=False))
    elif variant == "convert":
        result["rows"] = _drain(_worker_rows(replay, replay.pages(clock, time_parse=False), ctx))
    elif variant == "direct":
        result["rows"] = _drain(_worker_rows(replay, replay.direct_pages(clock), ctx))
    elif variant == "onepass":
        result["rows"] = _drain(_onepass_rows(replay, clock, ctx))
    elif variant in ("typed", "worker"):
        rows = _worker_rows(replay, replay.pages(clock, time_parse=variant == "worker"), ctx)
    elif variant == "encode":
        rows = chain.from_iterable(replay.in_order(ready))
    elif variant == "onepass_encode":
        rows = _onepass_rows(replay, clock, ctx)
    elif variant == "raw_worker":
        rows = _onepass_rows(replay, clock, ctx, time_parse=True, raw=True)
    else:
        raise ValueError(f"no variant {variant!r}")
    if rows is not None:
        if fmt is None:
            raise ValueError(f"variant {variant!r} needs a format")
        result.update(_encoded(exporter.write(replay.columns, rows, params, fmt, ctx), clock))
        result["rows"] = ctx.rows
    clock.stop()
    result.update(seconds=clock.wall, cpu_seconds=clock.cpu)
    return result


def _encoded(chunks: Iterator[bytes], clock: Stopwatch) -> dict[str, Any]:
    """Size and md5 of the encoded bytes, hashed off the clock."""
    md5, size = hashlib.md5(usedforsecurity=False), 0
    for chunk in chunks:
        with clock.paused():
            md5.update(chunk)
            size += len(chunk)
    return {"size": size, "md5": md5.hexdigest()}


def plan(formats: Iterable[str] = ("csv", "jsonl", "xlsx")) -> list[tuple[str, str | None]]:
    """(variant, format) of one round, in the order of the first round."""
    formats = list(formats)
    return ([(v, None) for v in CONVERT_ONLY] + [("worker", "csv"), ("raw_worker", "csv")]
            + [(v, f) for f in formats for v in ("typed", "encode")] + [("onepass_encode", "csv")]
            + [(v, f) for f in formats for v in ("before", "after")] + [("peer", "csv")])

