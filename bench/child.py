"""One measurement in a fresh process: ``python -m bench.child JOB '{json args}'``.

Prints one JSON line with the result. A fresh process per run makes the
resident-memory high-water mark (``ru_maxrss``) belong to that run alone and
keeps one variant's garbage or warm caches out of the next one's timing.

Every variant encodes the same rows with the same encoder the worker uses
(``get_exporter("demo").stream(..., "csv", ...)``), so they differ only in
what happens to the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psutil

from chalicelib.adapters import storage
from chalicelib.adapters.aws import client
from chalicelib.adapters.tasks_repo import TaskModel, configure
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.exporters import BuildContext, RowExporter, get_exporter
from chalicelib.formats.base import Format
from chalicelib.services import Downloads, Owner
from chalicelib.task import Status
from chalicelib.validation import parse_create

SETTINGS = Settings.from_env()
Result = dict[str, Any]
SEED = 0
MiB = 1024 * 1024


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    """The process's resident high-water mark in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _bench_key(job: str) -> str:
    return f"bench/{job}-{uuid.uuid4().hex}.csv"


def _demo(rows: int) -> tuple[RowExporter, dict[str, Any], BuildContext, Format]:
    exporter = get_exporter("demo")
    assert isinstance(exporter, RowExporter)
    params = {"rows": rows, "seed": SEED}
    ctx = BuildContext(SETTINGS, total_rows=exporter.total_rows(params))
    return exporter, params, ctx, exporter.format_for("csv")


def _demo_chunks(rows: int) -> tuple[Iterator[bytes], BuildContext]:
    exporter, params, ctx, _ = _demo(rows)
    return exporter.stream(params, "csv", ctx), ctx


def _measured(fn: Callable[[], Result]) -> Result:
    """Run ``fn`` with the wall clock, CPU time and memory of this process around it."""
    rss_before = _rss()
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    result.update(seconds=seconds, cpu_seconds=time.process_time() - cpu0,
                  rss_before=rss_before, peak_rss=_peak_rss())
    return result


# -- the variants --------------------------------------------------------------
def job_raw(rows: int) -> Result:
    """The raw limit: encode and hash, send the bytes nowhere."""

    def run() -> Result:
        md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
        chunks, ctx = _demo_chunks(rows)
        for chunk in chunks:
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
        return {"rows": ctx.rows, "size": size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}

    return _measured(run)


def _queued_task(rows: int, fmt: str = "csv") -> tuple[Any, Any]:
    """A queued demo task, and the worker's clients made, as in a warm Lambda.

    The other variants create their S3 client before their timer too; the
    first boto3 client of a process costs a tenth of a second of model loading.
    """
    from chalicelib.worker import Worker

    body = {"task_name": "bench", "kind": "demo", "format": fmt,
            "params": {"rows": rows, "seed": SEED}}
    task, _ = Downloads(SETTINGS).store_new(Owner("bench-sub", "bench", "acme"),
                                            parse_create(body), body, None)
    for service in ("s3", "events"):
        client(service)
    return task, Worker(SETTINGS)


def job_pipeline(rows: int, fmt: str = "csv", xlsx_writer: str = "streamed") -> Result:
    """The real worker: a queued task claimed and built by Worker.build."""
    if fmt == "xlsx":
        _use_xlsx_writer(xlsx_writer)
    task, worker = _queued_task(rows, fmt)

    def run() -> Result:
        done = worker.build(task.id)
        if done is None or done.status is not Status.SUCCEEDED:
            raise RuntimeError(f"the build did not succeed: {done}")
        return {"rows": int(done.progress.get("rows", 0)), "size": done.size, "md5": done.md5,
                "sha256": done.sha256, "object_key": done.object_key}

    result = _measured(run)
    storage.delete_object(SETTINGS.files_bucket, result.pop("object_key"))
    return result


def job_naive(rows: int) -> Result:
    """The pattern this service replaces: build it all in memory, put it, read it back for md5."""
    key = _bench_key("naive")
    s3 = client("s3")

    def run() -> Result:
        exporter, params, ctx, fmt = _demo(rows)
        columns, row_iter = exporter.open(params, ctx)
        all_rows = list(row_iter)
        body = b"".join(fmt.encode(columns, all_rows, ctx.count_rows))
        s3.put_object(Bucket=SETTINGS.files_bucket, Key=key, Body=body,
                      ContentType=fmt.content_type)
        md5 = hashlib.md5(usedforsecurity=False)
        stored = s3.get_object(Bucket=SETTINGS.files_bucket, Key=key)["Body"]
        for chunk in stored.iter_chunks(1 << 20):  # read back in pieces: kind to the naive side
            md5.update(chunk)
        return {"rows": ctx.rows, "size": len(body), "md5": md5.hexdigest()}

    result = _measured(run)
    s3.delete_object(Bucket=SETTINGS.files_bucket, Key=key)
    return result


def job_smart_open(rows: int, part_size: int = 0) -> Result:
    """The streaming peer: smart_open's S3 writer fed the same chunks (it hashes nothing)."""
    import smart_open

    key = _bench_key("smart_open")
    s3 = client("s3")
    params: dict[str, Any] = {"client": s3}
    if part_size:
        params["min_part_size"] = part_size

    def run() -> Result:
        chunks, ctx = _demo_chunks(rows)
        with smart_open.open(f"s3://{SETTINGS.files_bucket}/{key}", "wb", transport_params=params,
                             compression="disable") as out:
            for chunk in chunks:
                out.write(chunk)
        return {"rows": ctx.rows}

    result = _measured(run)
    head = s3.head_object(Bucket=SETTINGS.files_bucket, Key=key)
    result["size"] = int(head["ContentLength"])
    s3.delete_object(Bucket=SETTINGS.files_bucket, Key=key)
    return result


def job_stages(rows: int) -> Result:
    """Uninstrumented split of the raw limit: generate rows, encode them, hash the bytes."""
    exporter, params, ctx, fmt = _demo(rows)
    t0 = time.perf_counter()
    _, row_iter = exporter.open(params, ctx)
    for _ in row_iter:
        pass
    generate = time.perf_counter() - t0

    chunks_iter, _ = _demo_chunks(rows)
    t0 = time.perf_counter()
    chunks = list(chunks_iter)
    generate_and_encode = time.perf_counter() - t0

    t0 = time.perf_counter()
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    for chunk in chunks:
        md5.update(chunk)
    md5_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for chunk in chunks:
        sha256.update(chunk)
    sha_seconds = time.perf_counter() - t0

    return {"rows": rows, "size": sum(map(len, chunks)), "chunks": len(chunks),
            "generate": generate, "encode": generate_and_encode - generate,
            "md5": md5_seconds, "sha256": sha_seconds}


def job_upload_only(rows: int, rounds: int = 3) -> Result:
    """The upload side alone, on chunks encoded beforehand: StreamingUpload vs smart_open vs hashing.

    Taking the encoder out shows what each writer itself costs the worker,
    which the end-to-end figures blur with the encoder's much larger share.
    """
    import statistics

    import smart_open

    s3 = client("s3")
    chunks, _ = _demo_chunks(rows)
    data = list(chunks)
    part = SETTINGS.part_size_bytes

    def streaming_upload() -> None:
        key = _bench_key("upload")
        up = storage.StreamingUpload(SETTINGS.files_bucket, key, "text/csv", "attachment", part)
        for chunk in data:
            up.write(chunk)
        up.complete()
        s3.delete_object(Bucket=SETTINGS.files_bucket, Key=key)

    def smart_open_writer() -> None:
        key = _bench_key("upload")
        with smart_open.open(f"s3://{SETTINGS.files_bucket}/{key}", "wb", compression="disable",
                             transport_params={"client": s3, "min_part_size": part}) as out:
            for chunk in data:
                out.write(chunk)
        s3.delete_object(Bucket=SETTINGS.files_bucket, Key=key)

    def md5_and_sha256() -> None:
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        for chunk in data:
            md5.update(chunk)
            sha256.update(chunk)

    writers = {"StreamingUpload (computes md5 + sha256)": streaming_upload,
               "smart_open writer": smart_open_writer, "md5 + sha256 only, no upload": md5_and_sha256}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in writers}
    streaming_upload()  # warm both paths once
    smart_open_writer()
    for _ in range(rounds):
        for name, fn in writers.items():
            cpu0, t0 = time.process_time(), time.perf_counter()
            fn()  # the delete is inside: small, and the same for both writers
            samples[name].append((time.perf_counter() - t0, time.process_time() - cpu0))
    return {"rows": rows, "size": sum(map(len, data)), "chunks": len(data), "rounds": rounds,
            "writers": {name: {"seconds": statistics.median(w for w, _ in v),
                               "cpu_seconds": statistics.median(c for _, c in v),
                               "min": min(w for w, _ in v), "max": max(w for w, _ in v)}
                        for name, v in samples.items()}}


# -- xlsx ----------------------------------------------------------------------
XLSX_WRITERS = ("xlsxwriter", "streamed")


def _use_xlsx_writer(writer: str) -> None:
    """Make ``writer`` the one the exporters call for xlsx, its modules imported before any timer.

    "streamed" is the shipped writer (chalicelib.formats.xlsx); "xlsxwriter" the
    seed's XlsxWriter writer it replaced, kept in bench/xlsx_seed.py.
    """
    import dataclasses

    from chalicelib.formats import FORMATS
    from chalicelib.formats import xlsx as streamed  # imported now, not inside the measured span

    if writer == "xlsxwriter":
        import xlsxwriter  # noqa: F401 - imported here, not inside the measured span

        from bench.xlsx_seed import write_xlsx

        FORMATS["xlsx"] = dataclasses.replace(FORMATS["xlsx"], encode=write_xlsx)
    elif writer != "streamed":
        raise ValueError(f"no xlsx writer {writer!r}")
    assert FORMATS["xlsx"].encode is not None and streamed.MAX_SHEET_ROWS


def job_xlsx(rows: int, writer: str) -> Result:
    """Demo rows through one row writer, the bytes hashed and sent nowhere: a writer's raw limit.

    ``writer`` is one of ``XLSX_WRITERS``, or "csv" for the csv encoder as a
    yardstick. The rows come from the same exporter path the worker uses.
    """
    fmt = "csv" if writer == "csv" else "xlsx"
    if fmt == "xlsx":
        _use_xlsx_writer(writer)

    def run() -> Result:
        md5, sha256, size, chunks, largest = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0, 0, 0
        exporter, params, ctx, _ = _demo(rows)
        for chunk in exporter.stream(params, fmt, ctx):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
            chunks += bool(chunk)  # the empty ones are ticks, not bytes
            largest = max(largest, len(chunk))
        return {"rows": ctx.rows, "size": size, "md5": md5.hexdigest(), "chunks": chunks,
                "largest_chunk": largest}

    return _measured(run)


# -- profile -------------------------------------------------------------------


def _category(file: str, func: str) -> str | None:
    """Where a profiled function belongs; None for builtins, which follow their caller."""
    if file == "~":
        if "_hashlib.HASH" in func:
            return "md5 + sha256"
        if "_socket.socket" in func or "select." in func:
            return "waiting on the S3/DynamoDB server (socket)"
        if "_thread.lock" in func or "SimpleQueue" in func:
            return "waiting on a lock (a part in flight, or idle)"
        return None
    path = file.replace(os.sep, "/")
    for marker, name in (
        ("chalicelib/exporters/", "row generation (exporter)"),
        ("chalicelib/formats/", "csv encoding (formats)"),
        ("/csv.py", "csv encoding (formats)"),
        ("chalicelib/adapters/storage.py", "uploader (storage.py)"),
        ("/pynamodb/", "pynamodb"),
        ("/botocore/", "botocore / urllib3 / http.client (request handling)"),
        ("/urllib3/", "botocore / urllib3 / http.client (request handling)"),
        ("/http/client.py", "botocore / urllib3 / http.client (request handling)"),
        ("/socket.py", "botocore / urllib3 / http.client (request handling)"),
        ("/ssl.py", "botocore / urllib3 / http.client (request handling)"),
        ("/email/", "botocore / urllib3 / http.client (request handling)"),
        ("chalicelib/worker.py", "worker loop (worker.py)"),
        ("/concurrent/futures/", "thread pool (concurrent.futures, threading)"),
        ("/threading.py", "thread pool (concurrent.futures, threading)"),
    ):
        if marker in path:
            return name
    return "other Python"


def _areas(stats: dict[Any, Any]) -> Counter[str]:
    """Self time by area; a builtin's time goes to its callers' areas, in proportion."""
    areas: Counter[str] = Counter()
    for (file, _line, func), (_cc, _nc, tottime, _ct, callers) in stats.items():
        area = _category(file, func)
        if area is not None:
            areas[area] += tottime
            continue
        caller_total = sum(c[2] for c in callers.values()) or 1.0
        for (cfile, _cl, cfunc), c in callers.items():
            carea = _category(cfile, cfunc) or "other builtins"
            areas[carea] += tottime * c[2] / caller_total
    return areas


def _hottest(stats: dict[Any, Any], top: int) -> list[dict[str, Any]]:
    hottest = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": _short(file, line, func), "calls": nc, "self_s": tottime, "cum_s": cumtime}
            for (file, line, func), (_cc, nc, tottime, cumtime, _callers) in hottest]


def job_profile(rows: int, top: int = 18) -> Result:
    """Worker.build under cProfile, every thread: self time by area and the hottest functions.

    cProfile sees only the thread that enables it, so threads started during
    the build (an uploader, say) get a profiler of their own through
    ``Thread.run``; their figures are kept apart from the main thread's
    because the two run at the same time.
    """
    import cProfile
    import pstats
    import threading

    task, worker = _queued_task(rows)
    background: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        background.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main = cProfile.Profile()
    t0 = time.perf_counter()
    main.enable()
    done = worker.build(task.id)
    main.disable()
    wall = time.perf_counter() - t0
    threading.Thread.run = original_run  # type: ignore[method-assign]
    assert done is not None and done.status is Status.SUCCEEDED and done.object_key
    storage.delete_object(SETTINGS.files_bucket, done.object_key)

    main_stats: dict[Any, Any] = pstats.Stats(main).stats  # type: ignore[attr-defined]
    main_areas = _areas(main_stats)
    other_stats: dict[Any, Any] = {}
    if background:
        merged = pstats.Stats(background[0])
        for profile in background[1:]:
            merged.add(profile)
        other_stats = merged.stats  # type: ignore[attr-defined]
    other_areas = _areas(other_stats)
    names = sorted(set(main_areas) | set(other_areas), key=lambda a: -main_areas[a] - other_areas[a])
    return {"rows": rows, "wall_s": wall, "threads": 1 + len(background),
            "profiled_s": sum(main_areas.values()),
            "areas": {a: main_areas[a] for a in names},
            "background_areas": {a: other_areas[a] for a in names},
            "functions": _hottest(main_stats, top), "background_functions": _hottest(other_stats, 6)}


def _short(file: str, line: int, func: str) -> str:
    if file == "~":
        return func
    path = file.replace(os.sep, "/")
    for root in ("/site-packages/", "/work/main/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    else:
        path = path.rsplit("/", 2)[-1]
    return f"{path}:{line}({func})"


# -- listing -------------------------------------------------------------------
def job_listing(user_tasks: int, others: list[int], repeats: int = 3) -> Result:
    """Items DynamoDB reads for a listing page, as the table grows with other users' tasks.

    Counted from the Query responses themselves (ScannedCount, Count) through
    a botocore hook on PynamoDB's client, so nothing is inferred.
    """
    from chalicelib.principal import Principal, Scope
    from chalicelib.validation import ListQuery

    configure(SETTINGS.tasks_table)
    downloads = Downloads(SETTINGS)
    calls: Counter[str] = Counter()
    read = {"scanned": 0, "count": 0}

    def on_response(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        calls[model.name] += 1
        read["scanned"] += int(parsed.get("ScannedCount", 0))
        read["count"] += int(parsed.get("Count", 0))

    dynamodb = TaskModel._get_connection().connection.client
    dynamodb.meta.events.register("after-call.dynamodb", on_response)

    user = Principal("bench-user-sub", "bench-user", "acme")
    admin = Principal("bench-admin-sub", "bench-admin", "acme", scope=Scope.ALL)
    _seed(user_tasks, lambda i: ("bench-user-sub", "bench-user", "acme"))
    seeded = 0
    states = []
    for target in others:
        _seed(target - seeded, lambda i: (f"other-{i % 100:03d}-sub", f"other-{i % 100:03d}",
                                          "acme" if i % 2 else "globex"), start=seeded)
        seeded = target
        first_user = downloads.list(user, ListQuery(limit=20))
        scenarios: list[tuple[str, Any, Any]] = [
            ("user, first page", user, ListQuery(limit=20)),
            ("user, second page (cursor)", user,
             ListQuery(limit=20, cursor=first_user["next_cursor"])),
            ("user, status=failed filter", user,
             ListQuery(limit=20, statuses=frozenset({Status.FAILED}))),
            ("admin, all tasks", admin, ListQuery(limit=20)),
            ("admin, tenant=acme", admin, ListQuery(limit=20, tenant="acme")),
            ("admin, owner=bench-user", admin, ListQuery(limit=20, owner="bench-user-sub")),
            ("admin, filter matching nothing (bounded, not flat)", admin,
             ListQuery(limit=20, kind="no-such-kind")),
        ]
        rows = []
        for name, principal, query in scenarios:
            times = []
            for _ in range(repeats):
                calls.clear()
                read.update(scanned=0, count=0)
                t0 = time.perf_counter()
                page = downloads.list(principal, query)
                times.append(time.perf_counter() - t0)
            rows.append({"scenario": name, "queries": calls.get("Query", 0),
                         "other_calls": sum(v for k, v in calls.items() if k != "Query"),
                         "scanned": read["scanned"], "count": read["count"],
                         "items": len(page["items"]), "more": page["next_cursor"] is not None,
                         "ms": sorted(times)[len(times) // 2] * 1000})
        states.append({"other_tasks": target, "table_items": target + user_tasks, "rows": rows})
    return {"user_tasks": user_tasks, "states": states}


def _seed(n: int, who: Callable[[int], tuple[str, str, str]], start: int = 0) -> None:
    """Write ``n`` tasks fast with BatchWriteItem, mapped exactly as the repository stores them."""
    from chalicelib.adapters.tasks_repo import to_model
    from chalicelib.ids import new_id
    from chalicelib.task import Task, TaskError

    cycle = (Status.SUCCEEDED, Status.FAILED, Status.QUEUED, Status.SUCCEEDED, Status.CANCELED)
    at = utcnow()
    with TaskModel.batch_write() as batch:
        for i in range(start, start + n):
            sub, name, tenant = who(i)
            status = cycle[i % len(cycle)]
            task = Task(
                id=new_id(), owner=sub, owner_name=name, tenant=tenant, task_name=f"報告 {i}",
                file_name=f"report-{i}.csv", kind="demo", format="csv", params={"rows": 10},
                status=status, created_at=at, progress={"rows": 10, "bytes": 700},
            )
            model = to_model(task)
            if status is Status.SUCCEEDED:
                model.size, model.md5, model.sha256 = 700, "0" * 32, "0" * 64
                model.content_type = "text/csv; charset=utf-8"
                model.object_key = storage.object_key(tenant, task.id, 1, task.file_name)
                model.finished_at, model.expires_at = at, at + timedelta(days=7)
            elif status is Status.FAILED:
                model.error = TaskError("internal_error", "seeded").to_dict()
            batch.save(model)


def job_provision() -> Result:
    from local.provision import provision

    return provision(os.environ["AWS_ENDPOINT_URL"])


def job_dynamodb_record(segments: int = 0) -> Result:
    """The demo-users table's Scan pages, recorded once for ``job_dynamodb_rows`` (bench/dynamodb_rows.py).

    ``segments`` defaults to the deployment's SCAN_SEGMENTS, as the worker scans.
    """
    from bench.dynamodb_rows import record

    return record(segments or SETTINGS.scan_segments)


def job_dynamodb_rows(variant: str, repeat_pages: int, fmt: str | None = None,
                      profile: bool = False) -> Result:
    """One variant of the dynamodb_table row path on the recorded pages (bench/dynamodb_rows.py);
    ``profile``: under cProfile (an end-to-end variant), its top functions in the result."""
    from bench.dynamodb_rows import run

    result = run(variant, repeat_pages, fmt, profile=profile)
    result["peak_rss"] = _peak_rss()
    return result


JOBS: dict[str, Callable[..., Result]] = {
    "raw": job_raw, "pipeline": job_pipeline, "naive": job_naive, "smart_open": job_smart_open,
    "stages": job_stages, "upload_only": job_upload_only, "profile": job_profile, "listing": job_listing,
    "provision": job_provision, "xlsx": job_xlsx, "dynamodb_record": job_dynamodb_record,
    "dynamodb_rows": job_dynamodb_rows,
}


def main(argv: list[str]) -> None:
    job, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    configure(SETTINGS.tasks_table)
    result = JOBS[job](**args)
    result["job"] = job
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
