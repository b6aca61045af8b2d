"""The segments section's arithmetic and verdicts (bench/segments.py), on made-up runs.

The measurements need a whole stack and minutes; what is checked here is what
the report concludes from them: ratios paired within each round, runs that
stored different bytes refused, and the budget target judged on the content
of the file rather than on the stored bytes of a gzip'd one.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import segments

SHA = "a" * 64


def phase(wall: float, stack: float = 1.0, workers: float = 2.0) -> dict[str, float]:
    return {"wall": wall, "stack_cpu": stack, "workers_cpu": workers, "others_cpu": 0.0}


def run(n: int | str, wall: float, sha: str = SHA, finalize: float | None = None, **extra: Any
        ) -> dict[str, Any]:
    build = wall - 0.2 - (finalize or 0.0)
    return {"id": f"t-{n}-{wall}", "status": "succeeded", "error": None, "parallelism": n, "rows": 1000,
            "size": 4096, "sha256": sha, "md5": "m", "segments": 1 if n == 1 else n,
            "segments_succeeded": None if n == 1 else n, "polls": 3, "total": phase(wall),
            "phases": {"queued": phase(0.2), "build": phase(build),
                       "finalize": None if finalize is None else phase(finalize)}, **extra}


def budget(gz_content: str | None, one_wall: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
    gz_one = run(1, one_wall, sha="g1", content_sha256="c" * 64, content_size=10_000, size=2_000)
    plain = run("auto", 18.0, sha=None, finalize=4.0, compression=None, export_rows=1000,
                log={"segment_retries": 0})
    plain.update(status="failed", error={"code": "timeout"}, segments=8, segments_succeeded=8)
    gz = run("auto", 20.0, sha="g2", finalize=2.0, compression="gzip", export_rows=1500,
             content_sha256=gz_content, log={"segment_retries": 1})
    gz["segments"] = 32
    return gz_one, {"timeout": 5, "margin": 1, "budget": 4, "runs": [plain, gz]}


def summary(runs: dict[int, list[dict[str, Any]]], gz_content: str | None = "c" * 64,
            one_wall: float = 30.0) -> dict[str, Any]:
    gz_one, b = budget(gz_content, one_wall)
    steps = ("upload (as the segments do)", "compose", "digest")
    split = {"sizes": [2048, 2048],
             "steps": {name: {"seconds": 1.0, "stack_cpu": 0.9, "own_cpu": 0.1} for name in steps}}
    return segments.summarise(1000, runs, {"seconds": 5.0, "polls": 24, "stack_cpu": 0.3,
                                           "stack_cpu_per_s": 0.06}, split, gz_one, b)


def test_ratios_are_paired_within_each_round() -> None:
    seg = summary({1: [run(1, 10.0), run(1, 20.0)],
                   2: [run(2, 5.0, finalize=1.0), run(2, 20.0, finalize=1.0)]})
    two = next(r for r in seg["table"] if r["parallelism"] == 2)
    # per round 10/5 = 2.0 and 20/20 = 1.0: the median of those, not of the medians' ratio (15/12.5)
    assert two["ratio"] == pytest.approx(1.5)
    assert (two["ratio_min"], two["ratio_max"]) == (1.0, 2.0)
    assert two["finalize_s"] == pytest.approx(1.0)


def test_runs_that_stored_different_bytes_void_the_section() -> None:
    with pytest.raises(SystemExit, match="same bytes"):
        summary({1: [run(1, 10.0)], 2: [run(2, 5.0, sha="b" * 64, finalize=1.0)]})


def test_the_speedup_target_is_judged_on_two_segments() -> None:
    met = summary({1: [run(1, 10.0)], 2: [run(2, 6.0, finalize=1.0)], 4: [run(4, 9.0, finalize=1.0)]})
    missed = summary({1: [run(1, 10.0)], 2: [run(2, 7.0, finalize=1.0)], 4: [run(4, 5.0, finalize=1.0)]})
    assert segments.targets(met)[0][2] is True  # 10 / 6 = 1.67
    assert segments.targets(missed)[0][2] is False  # 10 / 7 = 1.43, whatever 4 segments did
    assert "Why 2 segments miss" in segments.markdown(missed)
    assert "Why 2 segments miss" not in segments.markdown(met)


@pytest.mark.parametrize("gz_content,one_wall,met", [
    ("c" * 64, 30.0, True),     # 30 s = 7.5 budgets of 4 s, the same content
    ("d" * 64, 30.0, False),    # a different file
    (None, 30.0, False),        # the segmented build did not succeed: nothing to compare
    ("c" * 64, 15.0, False),    # under 5 budgets: does not show what the issue asks
])
def test_the_budget_target_needs_five_budgets_and_the_same_content(gz_content: str | None, one_wall: float,
                                                                    met: bool) -> None:
    seg = summary({1: [run(1, 10.0)], 2: [run(2, 6.0, finalize=1.0)], 4: [run(4, 6.0, finalize=1.0)]},
                  gz_content, one_wall)
    assert segments.budget_verdict(seg)[0] is met
    text = segments.markdown(seg)
    assert "cannot be finished with this budget" in text  # the plain csv's timeout is reported
    assert "32 (1)" in text  # segments, and the builds that were queued again
