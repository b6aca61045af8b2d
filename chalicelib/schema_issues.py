"""JSON Schema errors as sentences for people: one ``{"field", "issue"}`` per problem.

A validator's own wording ("is not valid under any of the given schemas",
a regular expression, a Python ``repr``) tells a person nothing they can act
on, so each keyword gets a sentence here, and ``field`` followed by ``issue``
reads as one: ``params.rows`` + ``must be between 1 and 10000000``.

A schema can say it better itself, with two annotations that validators
ignore (and ``GET /kinds`` publishes, so a form can show them as hints):

- ``x-pattern-issue``: the issue when ``pattern`` does not match, in words
  (``may contain only letters, digits, '_', '.' and '-'``);
- ``x-issue``: the issue when any keyword of that (sub)schema fails, e.g. the
  ``value`` a ``between`` filter takes in an ``if``/``then`` branch.

Every error of a document is reported (``iter_errors``), not only the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Detail = dict[str, str]

X_ISSUE = "x-issue"
X_PATTERN_ISSUE = "x-pattern-issue"

_TYPE_WORDS = {
    "string": "a string", "integer": "a whole number", "number": "a number",
    "boolean": "a boolean", "array": "a list", "object": "an object", "null": "null",
}
_FORMAT_WORDS = {"date-time": "an ISO 8601 date and time", "date": "an ISO 8601 date",
                 "email": "an email address", "uri": "a URI", "uuid": "a UUID"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def field_path(root: str, path: Iterable[str | int]) -> str:
    """``params.filters[0].op``; a key that is not a plain name is quoted: ``params.headers["a b"]``."""
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def show(value: Any) -> str:
    """A value as it is written in the request: JSON (``"between"``, ``10000000``), never a repr."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def choices(values: Sequence[Any], last: str = "or") -> str:
    words = [show(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def _types(types: str | Sequence[str]) -> str:
    names = [types] if isinstance(types, str) else list(types)
    if names == ["boolean"]:
        return "true or false"
    words = [_TYPE_WORDS.get(n, n) for n in names]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _count(n: int, thing: str, things: str | None = None) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {things or thing + 's'}"


def _length(schema: Mapping[str, Any], failed: str) -> str:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if failed == "minLength" and low == 1:
        return "must not be empty"
    if low is not None and high is not None and low > 1:
        if low == high:
            return f"must be exactly {_count(low, 'character')} long"
        return f"must be {low} to {high} characters long"
    if failed == "minLength":
        return f"must be at least {_count(low, 'character')} long"
    return f"must be at most {_count(high, 'character')} long"


def _bounds(schema: Mapping[str, Any], failed: str) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"must be between {show(low)} and {show(high)}"
    if failed == "minimum":
        return f"must be at least {show(low)}"
    return f"must be at most {show(high)}"


def _items(schema: Mapping[str, Any], failed: str) -> str:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if failed == "minItems" and low == 1:
        return "must not be empty"
    if low is not None and high is not None and low > 0:
        if low == high:
            return f"must be a list of exactly {_count(low, 'item')}"
        return f"must have {low} to {high} items"
    if failed == "minItems":
        return f"must have at least {_count(low, 'item')}"
    return f"must have at most {_count(high, 'item')}"


def _duplicate(items: Sequence[Any]) -> str:
    seen: list[Any] = []
    for item in items:
        if item in seen:
            return f"must not list {show(item)} more than once"
        seen.append(item)
    return "must not list a value more than once"


def _under_property_names(error: Any) -> bool:
    """An error about an object's key, not a value (``propertyNames``)."""
    path = list(error.absolute_schema_path)
    return any(p == "propertyNames" and (i == 0 or path[i - 1] != "properties")
               for i, p in enumerate(path))


def _alternatives(error: Any, root: str) -> str:
    """anyOf/oneOf without an ``x-issue``: what each alternative would need, in sentences."""
    if not error.context:
        return "must match exactly one of the allowed forms, but matches several"
    by_branch: dict[Any, list[str]] = {}
    for sub in error.context:
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        for detail in render(sub, root):
            sentence = f"{detail['field']} {detail['issue']}"
            if sentence not in by_branch.setdefault(branch, []):
                by_branch[branch].append(sentence)
    forms = [" and ".join(sentences) for sentences in by_branch.values()]
    return "must match one of the allowed forms: " + ", or ".join(forms)


def render(error: Any, root: str = "params") -> list[Detail]:
    """One jsonschema error as details (``required`` and ``additionalProperties``
    name each missing or unknown field themselves)."""
    here = field_path(root, error.absolute_path)
    schema, keyword, value = error.schema, error.validator, error.validator_value
    if isinstance(schema, Mapping) and isinstance(schema.get(X_ISSUE), str):
        return [{"field": here, "issue": schema[X_ISSUE]}]
    instance = error.instance
    if keyword == "required":
        present = instance if isinstance(instance, Mapping) else {}
        return [{"field": field_path(here, [name]), "issue": "is required"}
                for name in value if name not in present]
    if keyword == "additionalProperties" and value is False:
        known = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        return [{"field": field_path(here, [name]), "issue": "is not a known field"}
                for name in instance
                if name not in known and not any(p.search(name) for p in patterns)]
    if keyword in ("dependencies", "dependentRequired"):
        return [{"field": field_path(here, [need]),
                 "issue": f"is required when {field_path(here, [name])} is given"}
                for name, needs in value.items() if name in instance and isinstance(needs, list)
                for need in needs if need not in instance]
    issue = _issue(error, root)
    if _under_property_names(error):
        return [{"field": here, "issue": f"has the key {json.dumps(instance, ensure_ascii=False)}, "
                                          f"which {issue}"}]
    return [{"field": here, "issue": issue}]


def _issue(error: Any, root: str) -> str:
    schema, keyword, value = error.schema, error.validator, error.validator_value
    if keyword == "type":
        return f"must be {_types(value)}"
    if keyword in ("minimum", "maximum"):
        return _bounds(schema, keyword)
    if keyword == "exclusiveMinimum":
        return f"must be greater than {show(value)}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {show(value)}"
    if keyword == "multipleOf":
        return f"must be a multiple of {show(value)}"
    if keyword in ("minLength", "maxLength"):
        return _length(schema, keyword)
    if keyword == "pattern":
        hint = schema.get(X_PATTERN_ISSUE)
        return hint if isinstance(hint, str) else "is not in the form this field takes"
    if keyword == "format":
        return f"must be {_FORMAT_WORDS.get(value, f'a valid {value}')}"
    if keyword == "enum":
        return f"must be {show(value[0])}" if len(value) == 1 else f"must be one of {choices(value)}"
    if keyword == "const":
        return f"must be {show(value)}"
    if keyword in ("minItems", "maxItems"):
        return _items(schema, keyword)
    if keyword == "uniqueItems":
        return _duplicate(error.instance)
    if keyword == "minProperties":
        return f"must have at least {_count(value, 'entry', 'entries')}"
    if keyword == "maxProperties":
        return f"must have at most {_count(value, 'entry', 'entries')}"
    if keyword in ("anyOf", "oneOf"):
        return _alternatives(error, root)
    if keyword == "contains":
        return "must hold at least one item of the kind this field needs"
    if keyword == "additionalItems":
        return "has more items than this field takes"
    return "has a value that is not allowed here"


def issues(errors: Iterable[Any], root: str = "params") -> list[Detail]:
    """Every error as details: one per field, its issues joined, without repeats.

    Where a field has an ``x-issue`` (the branch of an if/then that applies),
    it replaces the generic ones.
    """
    rendered: list[tuple[Detail, bool]] = []
    for error in errors:
        explained = isinstance(error.schema, Mapping) and X_ISSUE in error.schema
        rendered.extend((d, explained) for d in render(error, root))
    explained_fields = {d["field"] for d, explained in rendered if explained}
    by_field: dict[str, list[str]] = {}
    for detail, explained in rendered:
        if detail["field"] in explained_fields and not explained:
            continue
        said = by_field.setdefault(detail["field"], [])
        if detail["issue"] not in said:
            said.append(detail["issue"])
    return [{"field": field, "issue": ", and ".join(said)} for field, said in by_field.items()]


def validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for ``schema`` (its ``$schema``, else draft 7), imported lazily."""
    from jsonschema.validators import Draft7Validator, validator_for

    cls = validator_for(schema, default=Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def fill_defaults(schema: Mapping[str, Any], instance: Any) -> Any:
    """``instance`` with each absent property's ``default`` filled in, at every depth."""
    if isinstance(instance, dict) and isinstance(schema.get("properties"), Mapping):
        for name, sub in schema["properties"].items():
            if not isinstance(sub, Mapping):
                continue
            if name not in instance and "default" in sub:
                instance[name] = json.loads(json.dumps(sub["default"]))
            if name in instance:
                instance[name] = fill_defaults(sub, instance[name])
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        return [fill_defaults(schema["items"], item) for item in instance]
    return instance
