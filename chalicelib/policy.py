"""Access as data: which groups see which tasks, and may use which kinds and sources.

The rules live in a JSON file (``chalicelib/policy.json`` by default,
``ACCESS_POLICY_FILE`` to use another), read once per process:

- ``visibility``: Cognito group → ``"tenant"`` or ``"all"``; everyone else
  sees only their own tasks (see ``principal.Scope``);
- ``kinds``: kind (or ``"*"`` for every kind not named) → ``groups`` that may
  use it (``"*"``: every signed-in user) and ``sources``: group (or ``"*"``)
  → the tables, buckets or log groups its members may read (``"*"``: every
  one on the deployment's allow-list, which always bounds them).

A kind with no rule is refused, so a new kind is closed until a rule opens it
(the default file's ``"*"`` rule opens every kind to everyone).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.errors import Forbidden
from chalicelib.principal import Principal, Scope

ANY = "*"
DEFAULT_FILE = Path(__file__).with_name("policy.json")
_SCOPES = {"own": Scope.OWN, "tenant": Scope.TENANT, "all": Scope.ALL}


class PolicyError(ValueError):
    """The policy file is not what this module understands; the message says where."""


@dataclass(frozen=True)
class KindRule:
    groups: frozenset[str]
    #: group (or ANY) -> source names (ANY: the whole deployment allow-list)
    sources: Mapping[str, frozenset[str]] = field(default_factory=lambda: {ANY: frozenset({ANY})})

    def admits(self, groups: frozenset[str]) -> bool:
        return ANY in self.groups or bool(self.groups & groups)

    def sources_for(self, groups: frozenset[str], deployment: Iterable[str]) -> tuple[str, ...]:
        """The sources a member of ``groups`` may read, within the deployment's allow-list."""
        granted: set[str] = set()
        for group, names in self.sources.items():
            if group == ANY or group in groups:
                granted |= names
        allowed = tuple(deployment)
        return allowed if ANY in granted else tuple(s for s in allowed if s in granted)


@dataclass(frozen=True)
class Policy:
    visibility: Mapping[str, Scope]
    kinds: Mapping[str, KindRule]

    @classmethod
    def from_dict(cls, data: Any, origin: str = "policy") -> Policy:
        if not isinstance(data, dict):
            raise PolicyError(f"{origin}: must be a JSON object")
        unknown = set(data) - {"description", "visibility", "kinds"}
        if unknown:
            raise PolicyError(f"{origin}: unknown keys {sorted(unknown)}")
        visibility: dict[str, Scope] = {}
        for group, scope in _mapping(data.get("visibility", {}), f"{origin}.visibility").items():
            if scope not in _SCOPES:
                raise PolicyError(f"{origin}.visibility.{group}: one of {sorted(_SCOPES)}")
            visibility[group] = _SCOPES[scope]
        kinds = {kind: _rule(rule, f"{origin}.kinds.{kind}")
                 for kind, rule in _mapping(data.get("kinds", {}), f"{origin}.kinds").items()}
        return cls(visibility, kinds)

    def rule(self, kind: str) -> KindRule | None:
        return self.kinds.get(kind, self.kinds.get(ANY))

    def principal(self, claims: Mapping[str, Any] | None) -> Principal:
        return Principal.from_claims(claims, self.visibility)

    def may_use(self, principal: Principal, kind: str) -> bool:
        rule = self.rule(kind)
        return rule is not None and rule.admits(principal.groups)

    def sources(self, principal: Principal, kind: str, deployment: Iterable[str]) -> tuple[str, ...]:
        rule = self.rule(kind)
        return rule.sources_for(principal.groups, deployment) if rule else ()

    def check(self, principal: Principal, kind: str, source: tuple[str, str, Iterable[str]] | None) -> None:
        """Refuse (403) a kind, or a source of it, that the caller may not use.

        ``source`` is (param name, the value asked for, the deployment's allow-list).
        """
        if not self.may_use(principal, kind):
            raise Forbidden(f"You may not use export kind {kind!r}.",
                            details=[{"field": "kind", "issue": "is not allowed for your groups"}])
        if source is None:
            return
        param, value, deployment = source
        allowed = self.sources(principal, kind, deployment)
        if value not in allowed:
            offer = ", ".join(allowed) if allowed else "none"
            raise Forbidden(f"You may not export {param} {value!r} (you may: {offer}).",
                            details=[{"field": f"params.{param}", "issue": "is not allowed for you"}])


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be an object")
    return value


def _names(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: must be a list of names")
    return frozenset(value)


def _rule(data: Any, where: str) -> KindRule:
    data = _mapping(data, where)
    unknown = set(data) - {"groups", "sources"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    groups = _names(data.get("groups", []), f"{where}.groups")
    if "sources" not in data:
        return KindRule(groups)
    sources = {group: _names(names, f"{where}.sources.{group}")
               for group, names in _mapping(data["sources"], f"{where}.sources").items()}
    return KindRule(groups, sources)


@cache
def load(path: str | None = None) -> Policy:
    """The policy in ``path`` (default: ``ACCESS_POLICY_FILE``, else the shipped file)."""
    file = Path(path or os.environ.get("ACCESS_POLICY_FILE") or DEFAULT_FILE)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{file}: {exc}") from exc
    return Policy.from_dict(data, str(file))
