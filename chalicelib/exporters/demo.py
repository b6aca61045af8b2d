"""Synthetic rows with UTF-8 names: for trying the service and for benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any

from chalicelib.config import Settings
from chalicelib.exporters.base import BuildContext, RowExporter
from chalicelib.formats.base import Row

MAX_ROWS = 10_000_000

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

    @staticmethod
    def _rows(count: int, seed: int) -> Iterator[Row]:
        rng = random.Random(seed)
        rand = rng.random
        nf, ng, nc = len(FAMILY), len(GIVEN), len(CITIES)
        days = [(_EPOCH + timedelta(days=d)).isoformat() for d in range(2000)]
        for i in range(1, count + 1):
            r = int(rand() * 1_000_000_007)
            yield {
                "id": i,
                "name": f"{GIVEN[r % ng]} {FAMILY[(r >> 4) % nf]}",
                "email": f"user{i}@example.com",
                "city": CITIES[(r >> 8) % nc],
                "amount": round((r % 10_000_00) / 100, 2),
                "signup_date": days[(r >> 12) % 2000],
            }
