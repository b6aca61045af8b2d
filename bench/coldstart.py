"""Cold start: how long a fresh interpreter takes to import ``app`` versus bare boto3.

A Lambda cold start pays the handler module's import once per new execution
environment; boto3 is the floor every Python AWS function pays anyway, so
the difference is what this project adds.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.harness import ROOT, child_env

STATEMENTS = {
    "interpreter only (pass)": "pass",
    "import boto3": "import boto3",
    "import app": "import app",
}


def _once(statement: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT, env=child_env(None),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _self_ms_by_package(statement: str) -> dict[str, float]:
    """Import self-time summed by top-level package, from one ``python -X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], check=True,
                          cwd=ROOT, env=child_env(None), capture_output=True, text=True)
    by_package: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if m:
            package = m.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(m.group(1)) / 1000
    return by_package


def import_breakdown(runs: int = 5, top: int = 12) -> list[dict[str, Any]]:
    """What ``import app`` loads beyond ``import boto3``, package by package (median of runs)."""
    samples: dict[str, dict[str, list[float]]] = {"app": {}, "boto3": {}}
    for _ in range(runs):
        for name, statement in (("app", "import app"), ("boto3", "import boto3")):
            for package, ms in _self_ms_by_package(statement).items():
                samples[name].setdefault(package, []).append(ms)

    def median(name: str, package: str) -> float:
        values = samples[name].get(package, [])
        return statistics.median(values + [0.0] * (runs - len(values))) if values else 0.0

    rows = [{"package": p, "app_ms": median("app", p), "boto3_ms": median("boto3", p)}
            for p in samples["app"]]
    for row in rows:
        row["added_ms"] = row["app_ms"] - row["boto3_ms"]
    rows.sort(key=lambda r: r["added_ms"], reverse=True)
    return rows[:top]


def measure(runs: int) -> dict[str, Any]:
    """Median wall time of ``runs`` fresh processes per statement, interleaved."""
    for statement in STATEMENTS.values():  # warm the page cache and .pyc files first
        _once(statement)
    samples: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(runs):
        for name, statement in STATEMENTS.items():
            samples[name].append(_once(statement))
    result: dict[str, Any] = {
        "runs": runs,
        "median_s": {name: statistics.median(v) for name, v in samples.items()},
        "min_s": {name: min(v) for name, v in samples.items()},
        "max_s": {name: max(v) for name, v in samples.items()},
        "breakdown": import_breakdown(),
    }
    return result
