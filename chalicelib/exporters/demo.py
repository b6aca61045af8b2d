"""Synthetic rows with UTF-8 names: for trying the service and for benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any

from chalicelib.config import Settings
from chalicelib.exporters.base import BuildContext, RowExporter
from chalicelib.formats.base import Row
from chalicelib.segments import Plan, Segment, even_ranges

MAX_ROWS = 10_000_000
#: A cautious guess of one worker's rows per second, per format (docs/benchmarks.md measures more).
RATE = {"csv": 150_000, "jsonl": 150_000, "xlsx": 100_000}

FAMILY = ("王", "李", "張", "Müller", "García", "Søren", "Nguyễn", "Øberg", "Дмитриев", "O'Brien",
          "Łukasz", "Åström", "佐藤", "鈴木", "Smith", "Núñez")
GIVEN = ("伟", "芳", "Zoë", "José", "Ærin", "François", "Анна", "Ünal", "花子", "Chloé", "Iñigo",
         "Ana", "Björn", "Siân", "Renée", "Kai")
CITIES = ("上海", "München", "São Paulo", "Zürich", "Kraków", "東京", "Reykjavík", "Montréal",
          "New York", "Århus", "Москва", "Québec")
COLUMNS = ("id", "name", "email", "city", "amount", "signup_date")
_EPOCH = date(2020, 1, 1)


class DemoExporter(RowExporter):
    kind = "demo"
    title = "Demo rows (synthetic users with UTF-8 names)"
    split_by = "row ranges"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "rows": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": 1000},
            "seed": {"type": "integer", "default": 0},
        },
    }

    def examples(self, sources: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
        return [{"rows": 1000, "seed": 1}]

    def total_rows(self, params: dict[str, Any]) -> int | None:
        return int(params.get("rows", 1000))

    def open(self, params: dict[str, Any], ctx: BuildContext) -> tuple[Sequence[str], Iterator[Row]]:
        return COLUMNS, self._rows(int(params.get("rows", 1000)), int(params.get("seed", 0)))

    def estimate_seconds(self, params: dict[str, Any], fmt: str, settings: Settings) -> float | None:
        return int(params.get("rows", 1000)) / RATE.get(fmt, 100_000)

    def plan(self, params: dict[str, Any], fmt: str, settings: Settings, count: int) -> Plan:
        rows = int(params.get("rows", 1000))
        ranges = even_ranges(1, rows, count)
        return Plan(tuple(Segment(n, {"first": a, "last": b}) for n, (a, b) in enumerate(ranges, 1)),
                    total_rows=rows)

    def open_segment(
        self, params: dict[str, Any], ctx: BuildContext, shared: dict[str, Any], segment: Segment,
    ) -> tuple[Sequence[str], Iterator[Row]]:
        first, last = int(segment.spec["first"]), int(segment.spec["last"])
        ctx.total_rows = last - first + 1
        return COLUMNS, self._rows(last, int(params.get("seed", 0)), first)

    @staticmethod
    def _rows(count: int, seed: int, first: int = 1) -> Iterator[Row]:
        """Rows ``first`` to ``count``: the same rows, whichever segment asks for them."""
        rng = random.Random(seed)
        rand = rng.random
        for _ in range(first - 1):  # row i is the i-th draw of the seed's sequence
            rand()
        nf, ng, nc = len(FAMILY), len(GIVEN), len(CITIES)
        days = [(_EPOCH + timedelta(days=d)).isoformat() for d in range(2000)]
        for i in range(first, count + 1):
            r = int(rand() * 1_000_000_007)
            yield {
                "id": i,
                "name": f"{GIVEN[r % ng]} {FAMILY[(r >> 4) % nf]}",
                "email": f"user{i}@example.com",
                "city": CITIES[(r >> 8) % nc],
                "amount": round((r % 10_000_00) / 100, 2),
                "signup_date": days[(r >> 12) % 2000],
            }
