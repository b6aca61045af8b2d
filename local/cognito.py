"""Cognito on the moto server: the demo user pool, and ID-token verification.

API Gateway's Cognito user pool authorizer verifies the token before the app
sees a request; ``chalice local`` only decodes it. The local stack verifies it
the way the authorizer does (signature against the pool's JWKS, issuer,
audience, ``token_use`` and expiry), so a forged or stale token is refused
locally too instead of turning into a principal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import string
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

log = logging.getLogger("local.cognito")

POOL_NAME = "download-center-local"
CLIENT_NAME = "download-center-local-web"
TENANT_ATTRIBUTE = "tenant"
ADMIN_GROUP = "admin"
TENANT_ADMIN_GROUP = "tenant-admin"


@dataclass(frozen=True)
class DemoUser:
    """One demo user; ``password`` is generated per start, never stored in the repo."""

    username: str
    tenant: str
    groups: tuple[str, ...] = ()
    password: str = field(default="", repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self.password,
            "groups": list(self.groups),
            "tenant": self.tenant,
        }


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "acme"),
    DemoUser("bob", "acme"),
    DemoUser("carol", "globex"),
    DemoUser("dave", "acme", (TENANT_ADMIN_GROUP,)),
    DemoUser("admin", "acme", (ADMIN_GROUP,)),
)


@dataclass(frozen=True)
class UserPool:
    """What clients need to log in, and what the verifier needs to check tokens."""

    pool_id: str
    client_id: str
    region: str
    users: tuple[DemoUser, ...]

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"


def generate_password() -> str:
    """A fresh password that satisfies Cognito's default policy (all four classes)."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(16))
    return (
        body
        + secrets.choice(string.ascii_uppercase)
        + secrets.choice(string.ascii_lowercase)
        + secrets.choice(string.digits)
        + secrets.choice("-_.!")
    )


def _find_pool(client: Any, name: str) -> str | None:
    for page in client.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == name:
                return pool["Id"]
    return None


def _find_client(client: Any, pool_id: str, name: str) -> str | None:
    for page in client.get_paginator("list_user_pool_clients").paginate(UserPoolId=pool_id, MaxResults=60):
        for app_client in page["UserPoolClients"]:
            if app_client["ClientName"] == name:
                return app_client["ClientId"]
    return None


def create_user_pool(endpoint_url: str, region: str) -> UserPool:
    """Create (or reuse) the demo pool, its app client, the admin group and the users.

    Every user gets a newly generated, permanent password, so users exist
    confirmed and can log in with ``USER_PASSWORD_AUTH`` straight away.
    """
    client = boto3.client("cognito-idp", endpoint_url=endpoint_url, region_name=region)
    pool_id = _find_pool(client, POOL_NAME)
    if pool_id is None:
        pool_id = client.create_user_pool(
            PoolName=POOL_NAME,
            Schema=[
                {
                    "Name": TENANT_ATTRIBUTE,
                    "AttributeDataType": "String",
                    "Mutable": True,
                    "StringAttributeConstraints": {"MinLength": "1", "MaxLength": "64"},
                }
            ],
            AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
        )["UserPool"]["Id"]
    client_id = _find_client(client, pool_id, CLIENT_NAME)
    if client_id is None:
        client_id = client.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=CLIENT_NAME,
            GenerateSecret=False,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            # moto puts only readable attributes in the ID token (Cognito: all, by default)
            ReadAttributes=["email", "email_verified", f"custom:{TENANT_ATTRIBUTE}"],
        )["UserPoolClient"]["ClientId"]
    for group in (ADMIN_GROUP, TENANT_ADMIN_GROUP):
        with contextlib.suppress(client.exceptions.GroupExistsException):
            client.create_group(UserPoolId=pool_id, GroupName=group)

    users = []
    for demo in DEMO_USERS:
        user = DemoUser(demo.username, demo.tenant, demo.groups, generate_password())
        with contextlib.suppress(client.exceptions.UsernameExistsException):
            client.admin_create_user(
                UserPoolId=pool_id,
                Username=user.username,
                UserAttributes=[
                    {"Name": f"custom:{TENANT_ATTRIBUTE}", "Value": user.tenant},
                    {"Name": "email", "Value": f"{user.username}@{user.tenant}.example"},
                    {"Name": "email_verified", "Value": "true"},
                ],
                MessageAction="SUPPRESS",
            )
        client.admin_set_user_password(
            UserPoolId=pool_id, Username=user.username, Password=user.password, Permanent=True
        )
        for group in user.groups:
            client.admin_add_user_to_group(UserPoolId=pool_id, Username=user.username, GroupName=group)
        users.append(user)
    return UserPool(pool_id=pool_id, client_id=client_id, region=region, users=tuple(users))


def login(endpoint_url: str, region: str, client_id: str, username: str, password: str) -> str:
    """The user's ID token, obtained as a real client would (InitiateAuth)."""
    client = boto3.client("cognito-idp", endpoint_url=endpoint_url, region_name=region)
    result = client.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return result["AuthenticationResult"]["IdToken"]


class TokenError(Exception):
    """The presented token is not a valid ID token of this pool."""


class TokenExpired(TokenError):
    """A token of this pool that was valid once: the user needs to sign in again."""


KeySource = Callable[[], KeySet]
"""Where a verifier gets the pool's public keys; asked again when a token names an unknown key."""


def jwks_url(endpoint_url: str, pool_id: str) -> str:
    """The pool's well-known JWKS URL on a Cognito endpoint (the moto server locally)."""
    return f"{endpoint_url.rstrip('/')}/{pool_id}/.well-known/jwks.json"


def keys_from_url(url: str, timeout: float = 10.0) -> KeySource:
    """A key source that fetches the JWKS at ``url`` on every call (the verifier caches it)."""

    def fetch() -> KeySet:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return KeySet.import_key_set(json.load(resp))

    return fetch


def _key_source(keys: str | KeySet | KeySource, pool: UserPool) -> KeySource:
    """One shape for the verifier: a URL keeps ``TokenVerifier(endpoint_url, pool)`` working."""
    if isinstance(keys, str):
        return keys_from_url(jwks_url(keys, pool.pool_id))
    if isinstance(keys, KeySet):
        return lambda: keys
    return keys


class TokenVerifier:
    """Verify Cognito ID tokens as API Gateway's user pool authorizer does.

    ``keys`` is where the pool's public keys come from: a Cognito endpoint URL
    (the JWKS is fetched from the pool's well-known path, as the local stack
    does against the moto server), a ``KeySet``, or a callable returning one
    (in-process moto has no HTTP endpoint to fetch from). The keys are asked
    for again, at most every ``MIN_REFRESH_SECONDS``, when a token names a key
    id they do not hold (key rotation).
    """

    LEEWAY_SECONDS = 5
    MIN_REFRESH_SECONDS = 30.0

    def __init__(self, keys: str | KeySet | KeySource, pool: UserPool) -> None:
        self._key_source = _key_source(keys, pool)
        self._pool = pool
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        checks: dict[str, Any] = {
            "iss": {"essential": True, "value": pool.issuer},
            "aud": {"essential": True, "value": pool.client_id},
            "token_use": {"essential": True, "value": "id"},
            "sub": {"essential": True},
        }
        self._claims = jwt.JWTClaimsRegistry(leeway=self.LEEWAY_SECONDS, exp={"essential": True}, **checks)
        self._claims_but_expiry = jwt.JWTClaimsRegistry(leeway=self.LEEWAY_SECONDS, **checks)

    def _key_set(self, refresh: bool = False) -> KeySet:
        # Refetch on demand, but not per request: unknown key ids are cheap to send.
        with self._lock:
            stale = time.monotonic() - self._fetched_at >= self.MIN_REFRESH_SECONDS
            if self._keys is None or (refresh and stale):
                self._keys = self._key_source()
                self._fetched_at = time.monotonic()
            return self._keys

    def load(self) -> None:
        """Fetch the keys now, so a broken pool fails start-up rather than a request."""
        self._key_set()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is a valid, unexpired ID token of the pool.

        Raises :class:`TokenExpired` for an ID token of the pool that is valid
        but for its age, :class:`TokenError` for anything else.
        """
        if not token or token.count(".") != 2:
            raise TokenError("malformed token")
        try:
            try:
                decoded = jwt.decode(token, self._key_set(), algorithms=["RS256"])
            except InvalidKeyIdError:
                decoded = jwt.decode(token, self._key_set(refresh=True), algorithms=["RS256"])
            try:
                self._claims.validate(decoded.claims)
            except ExpiredTokenError:
                # "Sign in again" helps only if the token is otherwise one of ours.
                self._claims_but_expiry.validate({k: v for k, v in decoded.claims.items() if k != "exp"})
                raise TokenExpired("the token has expired") from None
        except JoseError as exc:
            raise TokenError(exc.description or exc.error) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise TokenError("malformed token") from exc
        return dict(decoded.claims)
