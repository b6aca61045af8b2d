"""``python -m bench``: run every measurement, print a table, write docs/benchmarks.md.

Sections (all by default, or some with ``--sections``):

- throughput: 1,000,000 demo rows to csv through the real Worker.build,
  side by side with the raw limit, a naive build and smart_open;
- memory: peak RSS of a fresh worker process for a 10 MiB and a 500 MiB
  export, and of the naive build;
- listing: DynamoDB items read per listing page as the table grows;
- coldstart: ``import app`` against ``import boto3``;
- package: the code package's cold start with the AWS SDK in it and without
  (``tools.package`` leaves it out; this shows why);
- xlsx: the streamed xlsx writer against the seed's XlsxWriter writer it
  replaced (and csv as a yardstick): rows/s and peak RSS of the encoder
  alone, and of one Worker.build each;
- dynamodb_rows: the dynamodb_table exporter's row path on recorded Scan
  pages of the demo-users table (parse, deserialize, rows, csv/jsonl/xlsx)
  against the same rows already in Python, so the cost of converting the
  items shows (bench/dynamodb_rows.py);
- segments: a 4,000,000-row demo csv export through a local stack with two
  worker processes, built in 1, 2 and 4 segments; the finish of a single file
  of about 100 MiB and 1 GiB from 4 segments, timed in the worker; and exports many times one
  invocation's time budget built with parallelism "auto" on a stack with
  short invocations (bench/segments.py).

``--merge`` measures only the ``--sections`` given and takes the others from
the last saved run; the document says which sections were measured when.

``--quick`` runs everything at toy sizes (a smoke test of the harness, a
minute or so); its figures mean nothing and it does not write the docs
unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import coldstart, report
from bench.harness import ROOT, MotoProcess, Patience, run_child

MiB = 1024 * 1024
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / ".local" / "bench" / "results.json"
SECTIONS = ("throughput", "memory", "listing", "coldstart", "package", "xlsx", "dynamodb_rows", "segments")


@dataclass(frozen=True)
class Sizes:
    rows: int = 1_000_000
    rounds: int = 9
    memory_mib: tuple[int, ...] = (10, 500)
    naive_mib: tuple[int, ...] = (10, 100)
    user_tasks: int = 50
    others: tuple[int, ...] = (10, 10_000)
    coldstart_runs: int = 15
    profile_rows: int = 1_000_000
    xlsx_rows: tuple[int, ...] = (200_000, 1_000_000)
    xlsx_rounds: int = 3
    xlsx_pipeline_rows: int = 1_000_000
    #: the recorded demo-users pages (10,000 items) are replayed this many times a run
    ddb_repeat: int = 10
    ddb_rounds: int = 3
    #: the segments section: rows of the demo csv export, rounds, the parallelisms compared
    seg_rows: int = 4_000_000
    seg_rounds: int = 3
    seg_parallelism: tuple[int, ...] = (1, 2, 4)
    #: the short-invocation stack: WORKER_TIMEOUT_SECONDS and TIME_BUDGET_MARGIN_SECONDS
    seg_timeout: int = 5
    seg_margin: int = 1
    #: rows of the gzip'd csv that must take one invocation at least 5 of the short budgets
    seg_budget_rows: int = 6_000_000
    #: the finish by the file's size (issue 18): about these MiB, in this many segments, rounds
    seg_finish_mib: tuple[int, ...] = (100, 1024)
    seg_finish_segments: int = 4
    seg_finish_rounds: int = 2


FULL = Sizes()
QUICK = Sizes(rows=100_000, rounds=1, memory_mib=(2, 20), naive_mib=(2, 10), others=(10, 300),
              coldstart_runs=3, profile_rows=100_000, xlsx_rows=(20_000, 100_000), xlsx_rounds=1,
              xlsx_pipeline_rows=100_000, ddb_repeat=1, ddb_rounds=1, seg_rows=200_000, seg_rounds=1,
              seg_budget_rows=300_000, seg_finish_mib=(6, 24), seg_finish_rounds=1)


Variant = tuple[str, str, dict[str, Any]]


def _variants(part_size: int) -> list[Variant]:
    """(label, child job, extra args) of the throughput variants, the pipeline first."""
    return [
        ("pipeline (Worker.build)", "pipeline", {}),
        ("raw limit (encode + md5 + sha256)", "raw", {}),
        ("naive (all in memory, put_object, read back)", "naive", {}),
        (f"smart_open ({part_size // MiB} MiB parts, as the pipeline)", "smart_open",
         {"part_size": part_size}),
        ("smart_open (its default 50 MiB parts)", "smart_open", {}),
    ]


def _round_order(variants: list[Variant], rnd: int) -> list[Variant]:
    """The order of one round: rotated, so no variant always runs first or last.

    The pipeline and smart_open at its default run back to back, first one
    then the other, so the ratio the peer target is judged on compares
    runs seconds apart.
    """
    pipeline, raw, naive, peer_same_parts, peer_default = variants
    pair = [pipeline, peer_default] if rnd % 2 == 0 else [peer_default, pipeline]
    units = [pair, [raw], [naive], [peer_same_parts]]
    k = rnd % len(units)
    return [variant for unit in units[k:] + units[:k] for variant in unit]


@dataclass
class Results:
    sizes: Sizes
    started: float = field(default_factory=time.time)
    quiet_share: float = 0.0
    throughput: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    listing: dict[str, Any] = field(default_factory=dict)
    coldstart: dict[str, Any] = field(default_factory=dict)
    package: dict[str, Any] = field(default_factory=dict)
    xlsx: dict[str, Any] = field(default_factory=dict)
    dynamodb_rows: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    retries: int = 0
    command: str = "make bench"
    quick: bool = False
    #: machine and code facts, taken when the run starts (see report.machine)
    machine: dict[str, str] = field(default_factory=dict)
    #: sections measured later and merged in (--merge): sections, when, machine facts
    merged: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Results:
        """A saved run, for --render."""
        data = json.loads(path.read_text(encoding="utf-8"))
        sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("sizes").items()})
        return cls(sizes=sizes, **data)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_throughput(sizes: Sizes, part_size: int, patience: Patience) -> dict[str, Any]:
    variants = _variants(part_size)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
    with MotoProcess() as moto:
        _log("throughput: warming the moto server up")
        for job in ("pipeline", "smart_open"):
            run_child(job, {"rows": min(sizes.rows, 150_000)}, moto.url, moto=moto)
        for rnd in range(sizes.rounds):
            for label, job, extra in _round_order(variants, rnd):
                _log(f"throughput round {rnd + 1}/{sizes.rounds}: {label}")
                runs[label].append(patience.run(job, {"rows": sizes.rows} | extra, moto.url, moto))
        _log("throughput: stage split and profile")
        stages = patience.run("stages", {"rows": sizes.rows}, None)
        upload_only = patience.run("upload_only", {"rows": sizes.rows, "rounds": sizes.rounds},
                                   moto.url, moto)
        profile = patience.run("profile", {"rows": sizes.profile_rows}, moto.url, moto)
        moto_peak = moto.peak_rss
    rows: list[dict[str, Any]] = []
    pipeline_s = [r["seconds"] for r in runs[variants[0][0]]]
    raw_s = [r["seconds"] for r in runs[variants[1][0]]]
    for label, job, extra in variants:
        got = runs[label]
        seconds = [r["seconds"] for r in got]
        med = statistics.median(seconds)
        # paired within each round: the runs of one round are seconds apart, so a machine
        # that drifts faster or slower between rounds moves both sides of each ratio alike
        paired_vs_raw = [raw / own for raw, own in zip(raw_s, seconds, strict=True)]
        pipeline_speedup = [own / pipe for pipe, own in zip(pipeline_s, seconds, strict=True)]
        rows.append({
            "variant": label, "job": job, "part_size": extra.get("part_size"),
            "rows": got[0]["rows"], "size": got[0]["size"],
            "seconds": med, "min": min(seconds), "max": max(seconds),
            "rows_per_s": got[0]["rows"] / med, "mib_per_s": got[0]["size"] / MiB / med,
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in got),
            "moto_cpu": statistics.median(r["_machine"]["moto_cpu"] for r in got),
            "others_cpu": statistics.median(r["_machine"]["others_cpu"] for r in got),
            "others_share": statistics.median(
                r["_machine"]["others_cpu"] / r["_machine"]["wall"] for r in got),
            "cpu_rows_per_s": statistics.median(
                r["rows"] / (r["cpu_seconds"] + r["_machine"]["moto_cpu"]) for r in got),
            "md5": got[0].get("md5"), "peak_rss": max(r["peak_rss"] for r in got),
            "paired_vs_raw": statistics.median(paired_vs_raw),
            "pipeline_speedup": statistics.median(pipeline_speedup),
            "pipeline_faster_rounds": sum(pipe < own for pipe, own in zip(pipeline_s, seconds, strict=True)),
        })
    _check_same_bytes(rows)
    return {"rows": rows, "stages": stages, "upload_only": upload_only, "profile": profile,
            "moto_peak_rss": moto_peak, "part_size": part_size, "raw_runs": runs}


def _check_same_bytes(rows: list[dict[str, Any]]) -> None:
    """Every variant must have produced the very same file, or the comparison is void."""
    sizes = {r["size"] for r in rows}
    md5s = {r["md5"] for r in rows if r["md5"]}
    if len(sizes) != 1 or len(md5s) != 1:
        raise SystemExit(f"the variants did not produce the same bytes: sizes {sizes}, md5 {md5s}")


def run_memory(sizes: Sizes, bytes_per_row: float, patience: Patience) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with MotoProcess() as moto:
        plan = [("pipeline", m) for m in sizes.memory_mib] + [("naive", m) for m in sizes.naive_mib]
        for job, mib in plan:
            rows = math.ceil(mib * MiB / bytes_per_row)
            _log(f"memory: {job} {mib} MiB ({rows:,} rows)")
            got = patience.run(job, {"rows": rows}, moto.url, moto, tries=1)
            got.update(target_mib=mib)
            runs.append(got)
        moto_peak = moto.peak_rss
    return {"runs": runs, "moto_peak_rss": moto_peak, "bytes_per_row": bytes_per_row}


#: The writers of the xlsx section, the one measured against first.
XLSX_VARIANTS = ("xlsxwriter", "streamed", "csv")


def run_xlsx(sizes: Sizes, patience: Patience) -> dict[str, Any]:
    """Each writer on the same demo rows in a fresh process, rounds interleaved; then one build each."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {w: {n: [] for n in sizes.xlsx_rows}
                                                          for w in XLSX_VARIANTS}
    for rnd in range(sizes.xlsx_rounds):
        k = rnd % len(XLSX_VARIANTS)
        order = XLSX_VARIANTS[k:] + XLSX_VARIANTS[:k]  # rotated: no writer always runs first
        for rows in sizes.xlsx_rows:
            for writer in order:
                _log(f"xlsx round {rnd + 1}/{sizes.xlsx_rounds}: {writer}, {rows:,} rows")
                runs[writer][rows].append(patience.run("xlsx", {"rows": rows, "writer": writer}, None))
    table = []
    for rows in sizes.xlsx_rows:
        before = runs["xlsxwriter"][rows]
        for writer in XLSX_VARIANTS:
            got = runs[writer][rows]
            seconds = [r["seconds"] for r in got]
            med = statistics.median(seconds)
            table.append({
                "writer": writer, "rows": rows, "size": got[0]["size"], "seconds": med,
                "min": min(seconds), "max": max(seconds), "rows_per_s": rows / med,
                "cpu_seconds": statistics.median(r["cpu_seconds"] for r in got),
                "cpu_rows_per_s": statistics.median(rows / r["cpu_seconds"] for r in got),
                "rss_before": statistics.median(r["rss_before"] for r in got),
                "peak_rss": max(r["peak_rss"] for r in got),
                "chunks": got[0]["chunks"], "largest_chunk": max(r["largest_chunk"] for r in got),
                "others_share": statistics.median(r["_machine"]["others_cpu"] / r["_machine"]["wall"]
                                                  for r in got),
                # paired within each round, as in the throughput section
                "speedup": statistics.median(b["seconds"] / r["seconds"]
                                             for b, r in zip(before, got, strict=True)),
                "cpu_speedup": statistics.median(b["cpu_seconds"] / r["cpu_seconds"]
                                                 for b, r in zip(before, got, strict=True)),
                "speedups": [b["seconds"] / r["seconds"] for b, r in zip(before, got, strict=True)],
            })
    builds = []
    with MotoProcess() as moto:
        for writer in XLSX_VARIANTS[:2]:
            _log(f"xlsx: Worker.build of {sizes.xlsx_pipeline_rows:,} rows with {writer}")
            got = patience.run("pipeline", {"rows": sizes.xlsx_pipeline_rows, "fmt": "xlsx",
                                            "xlsx_writer": writer}, moto.url, moto, tries=1)
            got.update(writer=writer)
            builds.append(got)
    return {"rows": table, "builds": builds, "rounds": sizes.xlsx_rounds}


def run_dynamodb_rows(sizes: Sizes, patience: Patience) -> dict[str, Any]:
    """Record demo-users' Scan pages once, then every variant in a fresh process, rounds interleaved."""
    from bench.dynamodb_rows import plan

    with MotoProcess() as moto:
        _log("dynamodb_rows: seeding demo-users on a moto server and recording its Scan pages")
        recording = run_child("dynamodb_record", {}, moto.url, moto=moto)
    variants = plan()
    runs: dict[tuple[str, str | None], list[dict[str, Any]]] = {v: [] for v in variants}
    for rnd in range(sizes.ddb_rounds):
        k = rnd * len(variants) // sizes.ddb_rounds  # rotated: no variant always runs first
        for variant, fmt in variants[k:] + variants[:k]:
            _log(f"dynamodb_rows round {rnd + 1}/{sizes.ddb_rounds}: {variant} {fmt or ''}")
            runs[(variant, fmt)].append(patience.run(
                "dynamodb_rows", {"variant": variant, "repeat_pages": sizes.ddb_repeat, "fmt": fmt}, None))
    _log("dynamodb_rows: the worker's csv path with the JSON reader, under cProfile")
    profile = run_child("dynamodb_rows", {"variant": "after", "repeat_pages": sizes.ddb_repeat, "fmt": "csv",
                                          "profile": True}, None)
    return dynamodb_rows_summary(recording, runs, sizes.ddb_repeat) | {"profile": profile}


def dynamodb_rows_summary(recording: dict[str, Any], runs: dict[tuple[str, str | None], list[dict[str, Any]]],
                          repeat_pages: int) -> dict[str, Any]:
    """Medians per variant and the ratios the report judges by, each paired within its round.

    Every variant of a format must have written the same bytes, and every
    variant must have seen every item, or the comparison is void.
    """
    items = recording["items"] * repeat_pages
    for (variant, fmt), got in runs.items():
        if {r["items"] for r in got} != {items} or any(r.get("rows", items) != items for r in got):
            raise SystemExit(f"dynamodb_rows {variant} {fmt}: not every item became a row: "
                             f"{[(r['items'], r.get('rows')) for r in got]}")
    for fmt in {f for _, f in runs if f}:
        # every variant but the peer (its own columns and str() of the values) writes the worker's bytes
        md5s = {r["md5"] for (v, f), got in runs.items() if f == fmt and v != "peer" for r in got}
        if len(md5s) != 1:
            raise SystemExit(f"dynamodb_rows: the {fmt} variants did not write the same bytes: {md5s}")
    table = []
    for (variant, fmt), got in runs.items():
        seconds = [r["seconds"] for r in got]
        med = statistics.median(seconds)
        table.append({
            "variant": variant, "fmt": fmt, "items": items, "seconds": med, "min": min(seconds),
            "max": max(seconds), "rows_per_s": items / med, "us_per_item": med / items * 1e6,
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in got),
            "cpu_rows_per_s": statistics.median(items / r["cpu_seconds"] for r in got),
            "size": got[0].get("size"), "md5": got[0].get("md5"), "peak_rss": max(r["peak_rss"] for r in got),
            "others_share": statistics.median(r["_machine"]["others_share"] for r in got),
        })

    def paired(fn: Any, key: str = "seconds") -> dict[str, Any]:
        """``fn(seconds of a variant in this round)`` for every round: median, min, max."""
        values = [fn(lambda variant, fmt=None, i=i: runs[(variant, fmt)][i][key])
                  for i in range(len(next(iter(runs.values()))))]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    formats = sorted({f for _, f in runs if f}, key=["csv", "jsonl", "xlsx"].index)
    ratios: dict[str, Any] = {}
    for key in ("seconds", "cpu_seconds"):
        ratios[key] = {
            "conversion_share": {f: paired(lambda t, f=f: 1 - t("encode", f) / t("typed", f), key)
                                 for f in formats},
            "parse_share_worker_csv": paired(lambda t: t("parse") / t("worker", "csv"), key),
            "typed_vs_encode": {f: paired(lambda t, f=f: t("typed", f) / t("encode", f), key)
                                for f in formats},
            "onepass_vs_convert": paired(lambda t: t("convert") / t("onepass"), key),
            "direct_vs_convert": paired(lambda t: t("convert") / t("direct"), key),
            "onepass_csv_vs_typed_csv": paired(lambda t: t("typed", "csv") / t("onepass_encode", "csv"), key),
            # the worker's csv path with the one-pass converter in place of deserialize + _plain
            "onepass_worker_csv": paired(
                lambda t: t("worker", "csv") / (t("worker", "csv") - t("convert") + t("onepass")), key),
            "parse_vs_rawparse": paired(lambda t: t("parse") / t("rawparse"), key),
            "raw_worker_vs_worker": paired(lambda t: t("worker", "csv") / t("raw_worker", "csv"), key),
            # issue 18: the worker's path end to end, the JSON reader against the typed one and the peer
            "after_vs_before": {f: paired(lambda t, f=f: t("before", f) / t("after", f), key)
                                for f in formats if ("after", f) in runs},
            "after_vs_peer": paired(lambda t: t("peer", "csv") / t("after", "csv"), key),
        }
    return {"recording": recording, "repeat": repeat_pages, "items": items,
            "rounds": len(next(iter(runs.values()))), "rows": table, "ratios": ratios}


def run_listing(sizes: Sizes) -> dict[str, Any]:
    with MotoProcess() as moto:
        _log(f"listing: {sizes.user_tasks} tasks of one user, then {sizes.others} of others")
        got = run_child("listing", {"user_tasks": sizes.user_tasks, "others": list(sizes.others)},
                        moto.url, moto=moto)
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes: test the harness only")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default docs/benchmarks.md; none with --quick)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for other processes to quieten down first")
    parser.add_argument("--merge", action="store_true",
                        help="measure only --sections; keep the other sections of the last saved run")
    parser.add_argument("--render", type=Path, nargs="?", const=RESULTS, default=None,
                        metavar="RESULTS_JSON",
                        help=f"measure nothing: write the report again from a saved run "
                             f"(default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.render is not None:
        results = Results.load(args.render)
        return _report(results, args.out or (None if results.quick else DOCS), args.strict)
    sizes = QUICK if args.quick else FULL
    out = args.out or (None if args.quick else DOCS)
    given = sys.argv[1:] if argv is None else argv

    from chalicelib.config import Settings

    part_size = Settings.from_env(_chalice_env()).part_size_bytes
    results = Results(sizes, quick=args.quick, machine=report.machine(),
                      command="python -m bench " + " ".join(given) if given else "make bench")
    if args.merge:
        dump = RESULTS.with_name("results-quick.json") if args.quick else RESULTS
        saved = Results.load(dump)
        saved.merged.append({"sections": list(args.sections), "started": results.started,
                             "machine": results.machine})
        results = saved
        _measure(results, sizes, args.sections, args.no_wait, part_size)
        return _save_and_report(results, out, args.strict, args.quick)
    _measure(results, sizes, args.sections, args.no_wait, part_size)
    return _save_and_report(results, out, args.strict, args.quick)


def _measure(results: Results, sizes: Sizes, sections: list[str], no_wait: bool, part_size: int) -> None:
    """Run ``sections`` into ``results``."""
    t0 = time.monotonic()
    patience = Patience(0 if no_wait else 150)
    quiet_share = patience.wait()
    if not results.merged:
        results.quiet_share = quiet_share
    if "throughput" in sections:
        results.throughput = run_throughput(sizes, part_size, patience)
        first = results.throughput["rows"][0]
        bytes_per_row = first["size"] / first["rows"]
    elif "memory" in sections:
        sample = run_child("raw", {"rows": 20_000}, None)
        bytes_per_row = sample["size"] / sample["rows"]
    if "memory" in sections:
        results.memory = run_memory(sizes, bytes_per_row, patience)
    if "listing" in sections:
        results.listing = run_listing(sizes)
    if "coldstart" in sections:
        patience.wait()
        _log(f"cold start: {sizes.coldstart_runs} fresh interpreters per statement")
        results.coldstart = coldstart.measure(sizes.coldstart_runs)
    if "package" in sections:
        other_load = patience.wait()
        _log(f"package: chalice package, then {sizes.coldstart_runs} cold imports per variant")
        results.package = coldstart.measure_package(sizes.coldstart_runs) | {"other_load": other_load}
    if "xlsx" in sections:
        patience.wait()
        results.xlsx = run_xlsx(sizes, patience)
    if "dynamodb_rows" in sections:
        patience.wait()
        results.dynamodb_rows = run_dynamodb_rows(sizes, patience)
    if "segments" in sections:
        from bench import segments

        patience.wait()
        results.segments = segments.measure(sizes.seg_rows, sizes.seg_parallelism, sizes.seg_rounds,
                                            sizes.seg_timeout, sizes.seg_margin, sizes.seg_budget_rows,
                                            patience.wait, sizes.seg_finish_mib,
                                            sizes.seg_finish_segments, sizes.seg_finish_rounds)
    if results.merged:
        results.merged[-1].update(seconds=time.monotonic() - t0, retries=patience.retries)
    else:
        results.seconds = time.monotonic() - t0
        results.retries = patience.retries


def _save_and_report(results: Results, out: Path | None, strict: bool, quick: bool) -> int:
    dump = RESULTS.with_name("results-quick.json") if quick else RESULTS
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(json.dumps(dataclasses.asdict(results), indent=1, default=str), encoding="utf-8")
    _log(f"saved the raw results to {dump.relative_to(ROOT)}")
    return _report(results, out, strict)


def _report(results: Results, out: Path | None, strict: bool) -> int:
    print(report.console(results, results.quick))
    if out is not None:
        out.write_text(report.markdown(results), encoding="utf-8")
        _log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if strict and not report.all_met(results) else 0


def _chalice_env() -> dict[str, str]:
    from bench.harness import chalice_env

    return chalice_env()


if __name__ == "__main__":
    sys.exit(main())
