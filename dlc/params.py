"""``-p key=value`` typed from a kind's JSON Schema.

On a command line every value is text; the API wants ``rows`` as a number and
``columns`` as a list. The kind's ``params_schema`` (from ``GET /kinds``) says
which, so ``rows=1000000`` is sent as ``1000000``, ``bom=yes`` as ``true``,
``columns=["id","name"]`` (or ``columns=id,name`` for a list of strings) as a
list, and a string stays the string typed, even when it looks like a number.
The API still validates everything; this only spares quoting JSON by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from dlc.errors import UsageError

TRUE = {"true", "yes", "on", "1"}
FALSE = {"false", "no", "off", "0"}
#: tried in this order when a property allows several types: text last, as it takes anything
TYPE_ORDER = ("null", "boolean", "integer", "number", "array", "object", "string")


def _types(schema: Mapping[str, Any]) -> list[str] | None:
    """The JSON types a property allows, or None when its schema does not say."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return sorted({_json_type(v) for v in values}, key=_rank)
    for combinator in ("anyOf", "oneOf"):
        if isinstance(schema.get(combinator), list):
            found: set[str] = set()
            for sub in schema[combinator]:
                found |= set(_types(sub) or [])
            return sorted(found, key=_rank) or None
    return None


def _rank(name: str) -> int:
    return TYPE_ORDER.index(name) if name in TYPE_ORDER else len(TYPE_ORDER)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _parse(raw: str, kind: str, schema: Mapping[str, Any]) -> Any:
    """``raw`` as a value of JSON type ``kind``; ValueError when it is not one."""
    text = raw.strip()
    if kind == "string":
        return raw
    if kind == "null":
        if text == "null":
            return None
        raise ValueError
    if kind == "boolean":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError
    if kind == "integer":
        value = json.loads(text)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError
        if value != int(value):
            raise ValueError
        return int(value)
    if kind == "number":
        value = json.loads(text)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError
        return value
    if kind in ("array", "object"):
        try:
            value = json.loads(text)
        except ValueError:
            items = schema.get("items") if kind == "array" else None
            if isinstance(items, Mapping) and items.get("type") == "string" and text:
                return [part.strip() for part in text.split(",")]
            raise
        if _json_type(value) != kind:
            raise ValueError
        return value
    raise ValueError


def _article(words: str) -> str:
    return ("an " if words[:1] in "aeiou" else "a ") + words


def coerce(name: str, raw: str, schema: Mapping[str, Any] | None) -> Any:
    """One value typed by its property's schema (JSON when the schema does not say)."""
    kinds = _types(schema or {})
    if not kinds:
        try:
            return json.loads(raw) if raw.strip()[:1] in "[{" else raw
        except ValueError:
            return raw
    for kind in sorted(kinds, key=_rank):
        try:
            value = _parse(raw, kind, schema or {})
        except ValueError:
            continue
        enum = (schema or {}).get("enum")
        if isinstance(enum, list) and value not in enum:
            continue
        return value
    enum = (schema or {}).get("enum")
    if isinstance(enum, list):
        wanted = "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in enum)
    else:
        wanted = _article(" or ".join(kinds)) + (" (JSON)" if {"array", "object"} & set(kinds) else "")
    raise UsageError("invalid_param", f"params.{name}: {raw!r} is not {wanted}")


def typed_params(schema: Mapping[str, Any] | None, pairs: Iterable[str],
                 base: Mapping[str, Any] | None = None, kind: str = "") -> dict[str, Any]:
    """``base`` (e.g. from ``--params-file``) with each ``key=value`` typed and set on top."""
    schema = schema or {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    params = dict(base or {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError("invalid_param", f"-p wants key=value, not {pair!r}")
        if key not in properties and schema.get("additionalProperties") is False:
            known = ", ".join(sorted(properties)) or "none"
            raise UsageError("invalid_param", f"params.{key}: {kind or 'this kind'} has no such parameter "
                                              f"(its parameters: {known})")
        params[key] = coerce(key, raw, properties.get(key))
    return params
