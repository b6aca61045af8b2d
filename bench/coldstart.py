"""Cold start: how long a fresh interpreter takes to import ``app`` versus bare boto3.

A Lambda cold start pays the handler module's import once per new execution
environment; boto3 is the floor every Python AWS function pays anyway, so
the difference is what this project adds.
"""

from __future__ import annotations

import compileall
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
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


# -- the deployment package: with the SDK in it, or the runtime's ---------------------------
#: The variants measured: (label, which zip, whether the runtime stand-in is byte-compiled).
PACKAGE_VARIANTS = (
    ("SDK in the package (chalice's default)", "full", True),
    ("SDK from the runtime, runtime byte-compiled", "lean", True),
    ("SDK from the runtime, runtime not byte-compiled", "lean", False),
)


def _extract(zip_path: Path, into: Path) -> float:
    t0 = time.perf_counter()
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)
    return time.perf_counter() - t0


def _import_from(task: Path, runtime: Path) -> float:
    """``import app`` in a fresh interpreter that sees only the package, then the runtime's dir.

    ``-S``: no site-packages (the venv's copies stay out); ``-E``: no PYTHONPATH;
    ``-B``: no .pyc written, so every run compiles what has no .pyc, as on
    Lambda, whose code directory is read-only and a chalice zip has no .pyc.
    """
    statement = f"import sys; sys.path[:0] = [{str(task)!r}, {str(runtime)!r}]; import app"
    env = {k: v for k, v in child_env(None).items() if k != "PYTHONPATH"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-E", "-S", "-B", "-c", statement], check=True, cwd=task,
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _runtime_standin(full_zip: Path, sdk: list[str], into: Path) -> None:
    """What /var/runtime holds: boto3 and s3transfer (this venv's) and botocore with its
    requirements (the very copies chalice packaged, so both variants run the same SDK code)."""
    import boto3
    import s3transfer

    from tools.package import distributions, top_level_entries

    with zipfile.ZipFile(full_zip) as archive:
        dists = distributions(archive)
        tops: set[str] = set()
        for name in sdk:
            tops |= top_level_entries(archive, dists[name][0])
        archive.extractall(into, [n for n in archive.namelist() if n.split("/", 1)[0] in tops])
    for module in (boto3, s3transfer):
        source = Path(module.__file__).parent
        shutil.copytree(source, into / source.name, ignore=shutil.ignore_patterns("__pycache__"))


def measure_package(runs: int) -> dict[str, Any]:
    """Cold start of the code package both ways: unzip, then ``import app`` with nothing cached.

    The package is built as ``make package`` builds it (``chalice package``),
    once as chalice leaves it and once with ``tools.package.strip_runtime_sdk``.
    """
    from tools import package

    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp_name:
        tmp = Path(tmp_name)
        package.run_chalice_package(ROOT, "prod", tmp / "out")
        zips = {"full": tmp / "full.zip", "lean": tmp / "lean.zip"}
        shutil.copy(tmp / "out" / package.DEPLOYMENT_ZIP, zips["full"])
        shutil.copy(zips["full"], zips["lean"])
        sdk = package.strip_runtime_sdk(zips["lean"])
        runtimes = {True: tmp / "runtime-compiled", False: tmp / "runtime-source"}
        for compiled, path in runtimes.items():
            _runtime_standin(zips["full"], sdk, path)
            if compiled:
                compileall.compile_dir(path, quiet=1)
        zip_facts = {}
        tasks = {}
        for name, path in zips.items():
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
            unzip = []
            for _ in range(max(3, runs // 3)):
                shutil.rmtree(tmp / f"task-{name}", ignore_errors=True)
                unzip.append(_extract(path, tmp / f"task-{name}"))
            tasks[name] = tmp / f"task-{name}"
            zip_facts[name] = {"bytes": path.stat().st_size, "files": len(infos),
                               "unpacked_bytes": sum(i.file_size for i in infos),
                               "unzip_s": statistics.median(unzip)}
        for _label, name, compiled in PACKAGE_VARIANTS:  # warm the page cache, check they import
            _import_from(tasks[name], runtimes[compiled])
        samples: dict[str, list[float]] = {label: [] for label, _, _ in PACKAGE_VARIANTS}
        for _ in range(runs):
            for label, name, compiled in PACKAGE_VARIANTS:
                samples[label].append(_import_from(tasks[name], runtimes[compiled]))
    rows = []
    for label, name, compiled in PACKAGE_VARIANTS:
        rows.append({"variant": label, "zip": name, "runtime_compiled": compiled,
                     "import_s": statistics.median(samples[label]),
                     "import_min_s": min(samples[label]), "import_max_s": max(samples[label]),
                     **zip_facts[name]})
    return {"runs": runs, "left_out": sdk, "rows": rows, "commit": _commit()}


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or "unknown"
