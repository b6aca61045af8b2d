"""Output options every row kind takes in ``params``, next to its own params.

The POST body's fields are fixed by the contract, so layout choices travel
in ``params``: their JSON Schema is merged into each row kind's published
``params_schema`` (so ``GET /kinds`` shows them and the usual validation
checks their types), and ``misfits`` refuses, at creation, those that do not
apply to the chosen format, rather than silently ignoring them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from chalicelib.formats.base import FORMATS, Format, WriteOptions

GZIP = "gzip"
NO_COMPRESSION = "none"

OPTION_PROPERTIES: dict[str, dict[str, Any]] = {
    "delimiter": {
        "type": "string", "minLength": 1, "maxLength": 1,
        # a tab, or any one printable character but the quote
        "pattern": '^(?:\\t|[^\\x00-\\x1f\\x7f"])$',
        "x-pattern-issue": 'must be a tab or one printable character other than the double quote (")',
        "description": "csv only: the field separator (default \",\"), e.g. \";\" or a tab.",
    },
    "bom": {
        "type": "boolean",
        "description": "csv only: start with a UTF-8 byte order mark, so Excel reads "
                       "non-ASCII text correctly (default false).",
    },
    "escape_formulas": {
        "type": "boolean",
        "description": "csv only: a text cell that starts with = + - @, a tab or a carriage "
                       "return, and is not a plain number such as -5 or +1.5, gets a leading ' "
                       "so that a spreadsheet shows it instead of running it as a formula "
                       "(CSV injection); header labels too (default true). Set false for "
                       "programs that read the csv and want the values unchanged.",
    },
    "headers": {
        "type": "object", "maxProperties": 1000,
        "propertyNames": {"minLength": 1, "maxLength": 255},
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "csv and xlsx: column -> label for the header row; jsonl keys stay "
                       "the column names.",
    },
    "compression": {
        "enum": [NO_COMPRESSION, GZIP],
        "description": "csv and jsonl: \"gzip\" stores a .gz file (default \"none\").",
    },
}
OPTION_NAMES = frozenset(OPTION_PROPERTIES)


def with_options(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A kind's own schema plus the option properties (a new dict; the kind's is untouched)."""
    merged = copy.deepcopy(dict(schema))
    merged.setdefault("type", "object")
    properties = merged.setdefault("properties", {})
    clash = OPTION_NAMES & set(properties)
    if clash:
        raise TypeError(f"params {sorted(clash)} are reserved for output options")
    properties.update(copy.deepcopy(OPTION_PROPERTIES))
    return merged


def misfits(params: Mapping[str, Any], fmt: Format) -> list[dict[str, str]]:
    """Options given for a format that does not take them, as validation details.

    ``compression: "none"`` fits every format: it asks for what they do anyway.
    """
    details = []
    for name in sorted(OPTION_NAMES & set(params) - fmt.options):
        if name == "compression" and params[name] == NO_COMPRESSION:
            continue
        takers = [f for f, spec in FORMATS.items() if name in spec.options]
        details.append({"field": f"params.{name}",
                        "issue": f"does not apply to format {fmt.name}, only to {', '.join(takers)}"})
    return details


def compression(params: Mapping[str, Any]) -> str:
    return str(params.get("compression") or NO_COMPRESSION)


def write_options(params: Mapping[str, Any], sheet_rows: int | None = None, header: bool = True
                  ) -> WriteOptions:
    return WriteOptions(
        header=header,
        delimiter=params.get("delimiter", ","),
        bom=bool(params.get("bom", False)),
        headers=dict(params.get("headers") or {}),
        sheet_rows=sheet_rows,
        escape_formulas=bool(params.get("escape_formulas", True)),
    )
