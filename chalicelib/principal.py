"""Who is asking, and what they may see: the isolation rules in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import Unauthorized

ADMIN_GROUP = "admin"
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    sub: str
    username: str
    tenant: str = DEFAULT_TENANT
    is_admin: bool = False

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any] | None) -> Principal:
        """Build from verified Cognito claims; none (or no ``sub``) is 401."""
        if not claims or not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("Authentication required: send a Cognito ID token.")
        groups = claims.get("cognito:groups") or []
        if isinstance(groups, str):
            # API Gateway flattens list claims into a string: "[a b]" or "a,b".
            groups = groups.strip("[]").replace(",", " ").split()
        username = claims.get("cognito:username") or claims.get("username") or claims["sub"]
        return cls(
            sub=claims["sub"],
            username=str(username),
            tenant=str(claims.get("custom:tenant") or DEFAULT_TENANT),
            is_admin=ADMIN_GROUP in groups,
        )

    def can_see(self, owner: str) -> bool:
        return self.is_admin or owner == self.sub
