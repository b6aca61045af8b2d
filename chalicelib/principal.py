"""Who is asking, and what they may see: the isolation rules in one place.

Which Cognito group sees how much is configuration (``chalicelib.policy``);
what each scope means is here, as plain Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from chalicelib.errors import Forbidden, Unauthorized

DEFAULT_TENANT = "default"

#: A tenant becomes a folder of the files bucket (``downloads/<tenant>/<task id>/``), which
#: a task's delete clears whole: a ``/`` in it would reach into another task's folder. So
#: letters, digits, ``.``, ``_`` and ``-`` only, a letter or digit at both ends (never ``.``
#: or ``..``), no ``..`` inside, at most 64 characters.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
TENANT_RULE = ("must be 1-64 letters, digits, '.', '_' or '-', start and end with a letter or "
               "digit, and hold no '..'")
#: An owner is a Cognito ``sub`` (a UUID), or a queue sender's id of the same sort: an index
#: key and part of the idempotency record's key, so no separator, space or control character.
OWNER_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._@-]{0,126}[A-Za-z0-9])?")
OWNER_RULE = ("must be 1-128 letters, digits, '.', '_', '@' or '-', starting and ending with a "
              "letter or digit")


def tenant_problem(value: object) -> str | None:
    """Why ``value`` cannot be a tenant (``TENANT_RULE``), or None.

    The one rule for every edge a tenant comes in by: a token's ``custom:tenant``
    and a queued request's ``tenant``.
    """
    if not isinstance(value, str) or TENANT_PATTERN.fullmatch(value) is None or ".." in value:
        return TENANT_RULE
    return None


def owner_problem(value: object) -> str | None:
    """Why ``value`` cannot be an owner (``OWNER_RULE``), or None; as for tenants, one rule."""
    if not isinstance(value, str) or OWNER_PATTERN.fullmatch(value) is None:
        return OWNER_RULE
    return None


class Scope(IntEnum):
    """How much a principal sees; a larger scope includes the smaller ones."""

    OWN = 1  # the tasks it created
    TENANT = 2  # every task of its own tenant
    ALL = 3  # every task


class Owned(Protocol):
    owner: str
    tenant: str


#: Groups that widen what a member sees when no policy says otherwise.
DEFAULT_VISIBILITY: Mapping[str, Scope] = {"admin": Scope.ALL, "tenant-admin": Scope.TENANT}


def _groups(claims: Mapping[str, Any]) -> frozenset[str]:
    groups = claims.get("cognito:groups") or []
    if isinstance(groups, str):
        # API Gateway flattens list claims into a string: "[a b]" or "a,b".
        groups = groups.strip("[]").replace(",", " ").split()
    return frozenset(str(g) for g in groups)


def _verified_email(claims: Mapping[str, Any]) -> str | None:
    """The address, if Cognito verified it; API Gateway passes the flag as the string "true"."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(email, str) and email and (verified is True or str(verified).lower() == "true"):
        return email
    return None


@dataclass(frozen=True)
class Principal:
    sub: str
    username: str
    tenant: str = DEFAULT_TENANT
    scope: Scope = Scope.OWN
    groups: frozenset[str] = field(default_factory=frozenset)
    #: the ``email`` claim, only when Cognito says it is verified (mail goes nowhere else)
    email: str | None = None

    @classmethod
    def from_claims(
        cls, claims: Mapping[str, Any] | None, visibility: Mapping[str, Scope] = DEFAULT_VISIBILITY,
    ) -> Principal:
        """Build from verified Cognito claims; none (or no ``sub``) is 401.

        A tenant-wide scope needs an explicit ``custom:tenant``: without one the
        user would be a tenant admin of everyone who has no tenant either. A
        ``custom:tenant`` outside ``TENANT_RULE`` is 403: it would name a folder
        of the files bucket that reaches into another's (an administrator sets
        it; the user cannot).
        """
        if not claims or not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("Authentication required: send a Cognito ID token.")
        if owner_problem(claims["sub"]):
            raise Unauthorized("The token's sub is not a Cognito user id.")
        groups = _groups(claims)
        tenant = claims.get("custom:tenant")
        if tenant and tenant_problem(tenant):
            raise Forbidden("Your account's tenant (custom:tenant) is not a valid tenant name; "
                            "ask an administrator to correct it.",
                            details=[{"field": "custom:tenant", "issue": TENANT_RULE}])
        scope = max((visibility.get(g, Scope.OWN) for g in groups), default=Scope.OWN)
        if scope is Scope.TENANT and not tenant:
            scope = Scope.OWN
        username = claims.get("cognito:username") or claims.get("username") or claims["sub"]
        return cls(sub=claims["sub"], username=str(username), tenant=str(tenant or DEFAULT_TENANT),
                   scope=scope, groups=groups, email=_verified_email(claims))

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ALL

    def can_see(self, task: Owned) -> bool:
        if self.scope is Scope.ALL:
            return True
        if self.scope is Scope.TENANT:
            return task.tenant == self.tenant
        return task.owner == self.sub
