"""Request validation without AWS: bodies, queries, file names, cursors.

Every problem becomes a ValidationError with a stable code and per-field
details, so clients can show them next to the right input.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from chalicelib import schema_issues
from chalicelib.clock import parse_iso
from chalicelib.errors import ApiError, ValidationError
from chalicelib.exporters import Exporter, get_exporter
from chalicelib.segments import AUTO, MAX_SEGMENTS, OUTPUTS, PARTS, SINGLE
from chalicelib.task import Status

MAX_NAME = 200
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
#: C0 controls, DEL and C1 controls: in a name, an ESC, a CR or a LF rewrites the terminal (or
#: the log line) of whoever reads it, a tenant admin listing others' tasks included
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: what a file name may not hold besides: a path's separators, and the quote that ends a header's value
_UNSAFE_FILE_CHARS = re.compile(r'[/\\"]|' + _CONTROL.pattern)
_DIGITS = re.compile(r"[0-9]{1,9}")  # int() of more digits can be slow or refused
#: Query parameters that become an index's hash key.
_KEY_PARAMS = frozenset({"owner", "tenant"})


@dataclass(frozen=True)
class CreateRequest:
    task_name: str
    kind: str
    format: str
    file_name: str | None
    params: dict[str, Any]
    #: ``notify.email`` as the body says it; None: the deployment's default
    notify_email: bool | None = None
    #: segments asked for: 1..MAX_SEGMENTS, or "auto"
    parallelism: int | str = AUTO
    output: str = SINGLE


@dataclass(frozen=True)
class ListQuery:
    statuses: frozenset[Status] = frozenset()
    kind: str | None = None
    task_name: str | None = None
    file_name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    owner: str | None = None
    tenant: str | None = None


def _detail(field: str, issue: str) -> dict[str, str]:
    return {"field": field, "issue": issue}


def parse_json_body(raw: bytes | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        raise ValidationError("The request body must be a JSON object.", code="invalid_json")
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                              code="body_too_large")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"The request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}.", code="invalid_json") from None
    except UnicodeDecodeError:
        raise ValidationError("The request body is not valid JSON: it is not UTF-8 text.",
                              code="invalid_json") from None
    except ValueError:
        # json.loads' only other ValueError: an integer longer than Python converts (its message
        # names sys.set_int_max_str_digits, an implementation detail no client can act on)
        raise ValidationError(f"The request body is not valid JSON the API takes: it holds a number "
                              f"of more than {sys.get_int_max_str_digits()} digits.",
                              code="invalid_json") from None
    except RecursionError:
        # 64 KiB of "[" is deeper than the parser's stack
        raise ValidationError("The request body is nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.", code="invalid_json")
    _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: dict[str, Any]) -> None:
    """Refuse ``"\\ud800"``-style escapes that pair with nothing: they are not text.

    JSON's grammar allows them and ``json.loads`` keeps them, but no UTF-8
    encoder does: stored, such a task made DynamoDB fail the write (a 500) or,
    inside ``params``, broke every later response that showed the task, the
    owner's whole listing included.
    """
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("The request body holds a \\u escape of an unpaired surrogate "
                              "(U+D800 to U+DFFF), which is not text.", code="invalid_json") from None


def deceptive_character(value: str) -> str | None:
    """The first character of ``value`` that makes a name show other than it is, else None.

    Control characters (C0, DEL, C1: ESC, CR, LF, NUL...) move a terminal's cursor or start
    an escape sequence; Unicode format characters (category Cf: the bidirectional overrides
    and isolates such as U+202E, the zero-width U+200B to U+200D, U+2060, U+FEFF, the soft
    hyphen) are invisible or reorder what follows, so ``invoice\u202efdp.exe`` reads as
    "invoiceexe.pdf". Names are shown to people (a tenant admin lists others' tasks), so
    neither kind may be in one.
    """
    for char in value:
        if _CONTROL.match(char) or unicodedata.category(char) == "Cf":
            return char
    return None


#: the issue a name with such a character gets (task_name and file_name alike)
DECEPTIVE_NAME_ISSUE = ("must not contain a control character (such as a line break, a tab or ESC) or an "
                        "invisible format character (such as U+202E or U+200B)")


def _check_name(value: Any, field: str, details: list[dict[str, str]]) -> str | None:
    """Every name's rules: a non-blank string of at most MAX_NAME characters that shows as it is."""
    if not isinstance(value, str):
        details.append(_detail(field, "must be a string"))
        return None
    if not value.strip():
        details.append(_detail(field, "must not be empty"))
        return None
    if len(value) > MAX_NAME:
        details.append(_detail(field, f"must be at most {MAX_NAME} characters long"))
        return None
    if deceptive_character(value) is not None:
        details.append(_detail(field, DECEPTIVE_NAME_ISSUE))
        return None
    return value


def check_file_name(value: Any, details: list[dict[str, str]]) -> str | None:
    name = _check_name(value, "file_name", details)
    if name is None:
        return None
    if _UNSAFE_FILE_CHARS.search(name):
        details.append(_detail("file_name", 'must not contain a slash (/), a backslash (\\) or a double '
                                            'quote (")'))
        return None
    if name.startswith(".") or name.strip() != name:
        details.append(_detail("file_name", "must not start with a dot, nor start or end with white space"))
        return None
    return unicodedata.normalize("NFC", name)


@cache
def _compiled(exporter: Exporter) -> Any:
    """One validator per exporter object (a re-registered kind gets its own)."""
    return schema_issues.validator(exporter.params_schema)


def params_issues(exporter: Exporter, params: Any) -> list[dict[str, str]]:
    """Every way ``params`` breaks the kind's JSON Schema, as details (none: valid)."""
    if not isinstance(params, dict):
        return [_detail("params", "must be an object")]
    return schema_issues.issues(_compiled(exporter).iter_errors(params))


def validate_params(exporter: Exporter, params: Any) -> dict[str, Any]:
    """Validate against the kind's JSON Schema; fill in its defaults."""
    details = params_issues(exporter, params)
    if details:
        raise ValidationError.of(details)
    return schema_issues.fill_defaults(exporter.params_schema, copy.deepcopy(params))


def parse_rename(body: dict[str, Any]) -> str:
    """The new ``task_name`` of a PATCH, held to the same rules as at create."""
    details: list[dict[str, str]] = [_detail(key, "is not a field that can be changed")
                                     for key in sorted(set(body) - {"task_name"})]
    task_name = None
    if "task_name" in body:
        task_name = _check_name(body["task_name"], "task_name", details)
    else:
        details.append(_detail("task_name", "is required"))
    if details or task_name is None:
        raise ValidationError.of(details)
    return task_name


def parse_create(body: dict[str, Any]) -> CreateRequest:
    """Every problem of the body at once; the code is that of the first check that fails.

    The order of the checks (the body's own fields, the kind, the format, the
    params) keeps each request's ``error.code`` what it always was; the
    ``details`` hold everything, so one round trip shows every mistake.
    Checks that compare params (a format's options, a time range) run once
    the params fit the schema.
    """
    details: list[dict[str, str]] = []
    unknown = sorted(set(body) - {"task_name", "kind", "format", "file_name", "params", "notify",
                                  "parallelism", "output"})
    for key in unknown:
        details.append(_detail(key, "is not a known field"))
    task_name = None
    if "task_name" in body:
        task_name = _check_name(body["task_name"], "task_name", details)
    else:
        details.append(_detail("task_name", "is required"))
    kind = body.get("kind")
    if kind is None:
        details.append(_detail("kind", "is required"))
    elif not isinstance(kind, str):
        details.append(_detail("kind", "must be a string"))
    file_name = check_file_name(body["file_name"], details) if body.get("file_name") is not None \
        else None
    params = body.get("params", {})
    if params is None:
        params = {}
    notify_email = _check_notify(body.get("notify"), details)
    parallelism, output = _check_split_fields(body, details)
    code = "validation_error" if details else None
    exporter = get_exporter(kind) if isinstance(kind, str) else None
    if isinstance(kind, str) and exporter is None:
        details.append(_detail("kind", "must be one of the kinds GET /kinds lists"))
        code = code or "unknown_kind"
    if exporter is None:
        raise ValidationError.of(details, code)
    fmt = body.get("format")
    if fmt is None:
        fmt = exporter.formats[0]
    if fmt not in exporter.formats:
        details.append(_detail("format", f"must be {schema_issues.choices(exporter.formats)} "
                                         f"for kind {kind}"))
        code = code or "unknown_format"
    problems = params_issues(exporter, params)
    if not problems and fmt in exporter.formats:
        params = validate_params(exporter, params)
        try:
            exporter.check(params, fmt)
        except ValidationError as exc:
            if not exc.details and code is None:
                raise  # a kind's own refusal without details: its message says it all
            problems = list(exc.details or [])
            code = code or exc.code
    if problems:
        details.extend(problems)
        code = code or "validation_error"
    if fmt in exporter.formats:
        split = split_problems(exporter, fmt, parallelism, output)
        details.extend(split)
        code = code or ("validation_error" if split else None)
    if code:
        raise ValidationError.of(details, code)
    return CreateRequest(task_name=task_name, kind=kind, format=fmt,  # type: ignore[arg-type]
                         file_name=file_name, params=params, notify_email=notify_email,
                         parallelism=parallelism, output=output)


def _check_split_fields(body: dict[str, Any], details: list[dict[str, str]]) -> tuple[int | str, str]:
    """``parallelism`` (1..MAX_SEGMENTS or "auto", the default) and ``output`` ("single", the default)."""
    parallelism = body.get("parallelism", AUTO)
    if parallelism is None:
        parallelism = AUTO
    if parallelism != AUTO and (isinstance(parallelism, bool) or not isinstance(parallelism, int)
                                or not 1 <= parallelism <= MAX_SEGMENTS):
        details.append(_detail("parallelism", f'must be "auto" or an integer from 1 to {MAX_SEGMENTS}'))
        parallelism = AUTO
    output = body.get("output", SINGLE)
    if output is None:
        output = SINGLE
    if output not in OUTPUTS:
        details.append(_detail("output", f"must be {schema_issues.choices(OUTPUTS)}"))
        output = SINGLE
    return parallelism, output


def split_problems(exporter: Exporter, fmt: str, parallelism: int | str, output: str
                   ) -> list[dict[str, str]]:
    """What a kind cannot do of the segments and the output asked for, as details."""
    outputs = exporter.outputs(fmt)
    if output == PARTS and PARTS not in outputs:
        return [_detail("output", f'cannot be "parts": kind {exporter.kind} is built by one worker')]
    if isinstance(parallelism, int) and parallelism > 1 and output not in outputs:
        why = (f"kind {exporter.kind} is built by one worker" if not outputs else
               f'a {fmt} file cannot be composed from segments; ask for "output": "parts"')
        return [_detail("parallelism", f"must be 1 or \"auto\": {why}")]
    return []


def _check_notify(notify: Any, details: list[dict[str, str]]) -> bool | None:
    """``{"email": true|false}``, or absent/null for the deployment's default."""
    if notify is None:
        return None
    if not isinstance(notify, dict):
        details.append(_detail("notify", 'must be an object such as {"email": true}'))
        return None
    for key in sorted(set(notify) - {"email"}):
        details.append(_detail(f"notify.{key}", "is not a known field"))
    email = notify.get("email")
    if email is not None and not isinstance(email, bool):
        details.append(_detail("notify.email", "must be true or false"))
        return None
    return email


def final_file_name(file_name: str | None, task_name: str, extension: str, created: datetime) -> str:
    """Append the format's extension; derive a safe name from the task name if absent.

    A compound extension is completed, not repeated: ``report.csv`` with
    ``.csv.gz`` becomes ``report.csv.gz``.
    """
    if file_name is None:
        base = _UNSAFE_FILE_CHARS.sub("_", task_name).strip().lstrip(".") or "export"
        base = base[: MAX_NAME - 32]
        file_name = f"{base}_{created.strftime('%Y%m%d-%H%M%S')}"
    lower, ext = file_name.lower(), extension.lower()
    if not lower.endswith(ext):
        cut = ext.rfind(".")
        while cut > 0 and not lower.endswith(ext[:cut]):
            cut = ext.rfind(".", 0, cut)
        file_name += extension[cut:] if cut > 0 else extension
    return file_name


def validate_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or _CONTROL.search(value):
        raise ValidationError.of([_detail(
            "Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")])
    return value


def _parse_time(params: dict[str, str], name: str, details: list[dict[str, str]]) -> datetime | None:
    if name not in params:
        return None
    try:
        return parse_iso(params[name])
    except ValueError:
        details.append(_detail(name, "must be an ISO 8601 time, e.g. 2026-11-23T10:00:00Z"))
    except OverflowError:
        # e.g. 0001-01-01T00:00+01:00: in UTC it falls before year 1
        details.append(_detail(name, "must be between years 1 and 9999 in UTC"))
    return None


def _parse_limit(params: dict[str, str], details: list[dict[str, str]]) -> int | None:
    """Plain decimal digits only: ``int()`` alone also takes ``+5``, `` 5``,
    ``1_0`` and non-ASCII digits, none of which the contract's integer is."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    limit = int(raw) if _DIGITS.fullmatch(raw) else -1
    if not 1 <= limit <= MAX_LIMIT:
        details.append(_detail("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        return None
    return limit


def _parse_statuses(params: dict[str, str], details: list[dict[str, str]]) -> frozenset[Status]:
    """Comma-separated statuses; spaces around the commas are ignored.

    An empty value or item (``status=``, ``queued,,failed``) is refused like
    an empty ``kind``: read as "no filter" it would list every status when a
    client joined an empty selection.
    """
    statuses: set[Status] = set()
    if "status" not in params:
        return frozenset()
    for raw in (part.strip() for part in params["status"].split(",")):
        try:
            statuses.add(Status(raw))
        except ValueError:
            issue = (f"has {json.dumps(raw, ensure_ascii=False)}, which is not one of "
                     f"{schema_issues.choices([s.value for s in Status])}") if raw else \
                "must not be empty or have an empty item between commas"
            if _detail("status", issue) not in details:
                details.append(_detail("status", issue))
    return frozenset(statuses)


def _check_text_param(name: str, value: str, details: list[dict[str, str]]) -> None:
    """1-2048 characters; ``owner`` and ``tenant`` also at most 2048 bytes.

    Those two become an index's hash key, and DynamoDB fails a Query whose
    hash key is over 2048 bytes (a 500 here): 2048 non-ASCII characters are.
    """
    if not value or len(value) > 2048:
        details.append(_detail(name, "must be 1 to 2048 characters long"))
    elif name in _KEY_PARAMS and len(value.encode("utf-8", "surrogatepass")) > 2048:
        details.append(_detail(name, "must be at most 2048 bytes in UTF-8"))


def parse_list_query(params: dict[str, str] | None, *, sees_others: bool) -> ListQuery:
    """``owner`` and ``tenant`` are filters for callers who see more than their own tasks."""
    params = dict(params or {})
    details: list[dict[str, str]] = []
    allowed = {"status", "kind", "task_name", "file_name", "created_after", "created_before",
               "limit", "cursor"} | ({"owner", "tenant"} if sees_others else set())
    for key in sorted(set(params) - allowed):
        details.append(_detail(key, "is not a known query parameter"))
    statuses = _parse_statuses(params, details)
    limit = _parse_limit(params, details)
    after = _parse_time(params, "created_after", details)
    before = _parse_time(params, "created_before", details)
    if after and before and after > before:
        details.append(_detail("created_after", "must not be later than created_before"))
    for name in ("kind", "task_name", "file_name", "owner", "tenant", "cursor"):
        if name in params:
            _check_text_param(name, params[name], details)
    if details:
        # a bad limit kept its own code when it was the only check that stopped early
        raise ValidationError.of(details, "invalid_limit" if limit is None else None)
    assert limit is not None
    return ListQuery(
        statuses=statuses, kind=params.get("kind"), task_name=params.get("task_name"),
        file_name=params.get("file_name"), created_after=after, created_before=before,
        limit=limit, cursor=params.get("cursor"), owner=params.get("owner"),
        tenant=params.get("tenant"),
    )


__all__ = ["ApiError", "CreateRequest", "ListQuery", "final_file_name", "parse_create",
           "parse_json_body", "parse_list_query", "validate_idempotency_key", "validate_params"]
