"""The sample bucket and log group: something real for ``s3_bundle`` and ``log_archive``.

``demo-files`` holds a few hundred small objects under nested prefixes, with
UTF-8 and space-containing keys (the names a zip and its manifest must keep
intact), and one object of several MiB of incompressible bytes (so a bundle
streams more than one GetObject chunk). ``/demo/app`` holds three streams with
an event a minute over the day before start-up: two of access-log text, one of
JSON lines. CloudWatch Logs (and moto) refuse events older than 14 days, so
the day moves with the start; the objects are the same on every start.

Both are idempotent and take a fraction of a second: the local stack's
start-up time is what every end-to-end test waits for.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

SAMPLE_BUCKET = "demo-files"
SAMPLE_LOG_GROUP = "/demo/app"
#: The one large object: several MiB, so a bundle reads it in more than one chunk.
BIG_KEY = "media/video sample.bin"
BIG_SIZE = 6 * 1024 * 1024
LOG_STREAMS = ("web-1", "web-2", "worker")
LOG_SPAN = timedelta(days=1)
LOG_EVERY = timedelta(minutes=1)
_PUT_THREADS = 4

_REGIONS = ("north", "south", "east", "west")
_ALBUMS = ("夏天 2023", "Zürich trip", "東京", "family & friends")
_DOCS = {
    "docs/read me.txt": "Sample files for the s3_bundle kind.\n",
    "docs/Ünïcödé – notes.txt": "Ünïcödé, accents and a dash in the key.\n",
    "docs/年度报告 2024.txt": "# 年度报告\n\n导出示例。\n",
    "docs/emoji 🌸.txt": "A key outside the BMP.\n",
    "docs/deep/nested/a/b/c/leaf.txt": "Six levels down.\n",
}
_PATHS = ("/", "/downloads", "/kinds", "/downloads/01HZX/file", "/搜索?q=导出", "/health")


@dataclass(frozen=True)
class SampleBucket:
    name: str
    objects: int
    bytes: int


def sample_objects() -> Iterator[tuple[str, bytes]]:
    """Every (key, body) of the sample bucket; the same on every call."""
    rng = random.Random(20240501)
    for month in range(1, 13):
        for region in _REGIONS:
            lines = ["date,region,product,amount"] + [
                f"2024-{month:02d}-{day:02d},{region},{rng.choice(['茶', 'Café', 'Brötchen', 'soba'])},"
                f"{rng.randint(100, 99_999) / 100:.2f}"
                for day in range(1, 11)
            ]
            yield f"reports/2024/{month:02d}/sales {region}.csv", ("\n".join(lines) + "\n").encode()
    yield "reports/2024/年度总结 2024.txt", "# 年度总结\n\n销售额上升。\n".encode()
    for album in _ALBUMS:
        for n in range(1, 41):
            yield f"photos/{album}/IMG {n:04d}.txt", f"{album} #{n}\n".encode() * rng.randint(1, 40)
    for n in range(1, 61):
        invoice = {"id": f"INV-{n:05d}", "customer": rng.choice(["Acme", "Globex", "株式会社テスト"]),
                   "total": rng.randint(1_000, 500_000) / 100, "currency": "EUR"}
        yield f"invoices/acme/INV-{n:05d}.json", json.dumps(invoice, ensure_ascii=False).encode()
    for key, text in _DOCS.items():
        yield key, text.encode()
    yield BIG_KEY, random.Random(7).randbytes(BIG_SIZE)


def seed_sample_bucket(endpoint_url: str | None, region: str, name: str = SAMPLE_BUCKET) -> SampleBucket:
    """Create the bucket and put every sample object (a re-run overwrites the same objects).

    The puts go out a few at a time: each is a round trip to the moto server.
    """
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    try:
        s3.head_bucket(Bucket=name)
    except s3.exceptions.ClientError:
        kwargs: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
    objects = list(sample_objects())
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=name, Key=item[0], Body=item[1]), objects))
    return SampleBucket(name, len(objects), sum(len(body) for _, body in objects))


def log_events(stream: str, end: datetime) -> list[dict[str, Any]]:
    """A day of events of ``stream`` up to ``end``, oldest first (as PutLogEvents wants them)."""
    rng = random.Random(stream)
    start = end - LOG_SPAN
    events = []
    for n in range(int(LOG_SPAN / LOG_EVERY)):
        at = start + n * LOG_EVERY
        if stream == "worker":
            message = json.dumps({"level": rng.choice(["INFO", "INFO", "INFO", "WARNING", "ERROR"]),
                                  "message": rng.choice(["build started", "build succeeded",
                                                         "导出完成", "retrying part upload"]),
                                  "task_id": f"01HZX{n:05d}", "rows": rng.randint(0, 10_000)},
                                 ensure_ascii=False)
        else:
            message = (f'127.0.0.1 "GET {rng.choice(_PATHS)} HTTP/1.1" '
                       f"{rng.choice([200, 200, 200, 302, 404, 500])} {rng.randint(80, 90_000)}")
        events.append({"timestamp": int(at.timestamp() * 1000), "message": message})
    return events


def seed_log_group(endpoint_url: str | None, region: str, name: str = SAMPLE_LOG_GROUP,
                   end: datetime | None = None) -> int:
    """Create the log group and its streams with a day of events up to ``end`` (default: now).

    Returns how many events were put. A re-run on the same server adds another
    day's events to the existing streams (the local stack starts on an empty one).
    """
    logs = boto3.client("logs", endpoint_url=endpoint_url, region_name=region)
    end = (end or datetime.now(UTC)).replace(second=0, microsecond=0)
    existing = {g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]}
    if name not in existing:
        logs.create_log_group(logGroupName=name)
    streams = {s["logStreamName"] for s in logs.describe_log_streams(logGroupName=name)["logStreams"]}
    total = 0
    for stream in LOG_STREAMS:
        if stream not in streams:
            logs.create_log_stream(logGroupName=name, logStreamName=stream)
        events = log_events(stream, end)
        logs.put_log_events(logGroupName=name, logStreamName=stream, logEvents=events)
        total += len(events)
    return total
