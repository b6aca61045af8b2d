"""Tokens are checked as API Gateway's Cognito authorizer checks them.

chalice's own test client only decodes the JWT, so a forged token would
become a principal and a test could pass that production would fail. These
tests pin that the integration client refuses every token API Gateway
refuses (signature, ``iss``, ``aud``, ``token_use``, ``exp``), with the 401
in the API's error envelope, and still admits a real ID token.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import boto3
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from moto.utilities.utils import load_resource

MOTO_PRIVATE_JWKS = "cognitoidp/resources/jwks-private.json"
MOTO_KID = "dummy"  # the key id moto puts in every token header and its JWKS


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def claims_of(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[1])


def with_claims(token: str, **changes: Any) -> str:
    """The token with its payload edited and its original header and signature kept."""
    header, payload, signature = token.split(".")
    edited = b64url_json(payload) | changes
    return ".".join([header, b64url(json.dumps(edited).encode()), signature])


def sign(claims: dict[str, Any], key: RSAKey, kid: str = MOTO_KID) -> str:
    """A correctly signed RS256 token, as Cognito (moto) would issue it if ``key`` is moto's."""
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, key)


def moto_signing_key() -> RSAKey:
    """The private key moto signs every pool's tokens with (shipped inside moto)."""
    return RSAKey.import_key(load_resource(MOTO_PRIVATE_JWKS))


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token: header and payload, empty signature."""
    header = b64url(json.dumps({"alg": "none", "kid": MOTO_KID}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def login(pool_id: str, client_id: str, username: str) -> dict[str, str]:
    """InitiateAuth's tokens for ``username`` through ``client_id``, as a real client gets them.

    The fixture keeps no passwords, so the user gets a fresh one first.
    """
    idp = boto3.client("cognito-idp")
    password = secrets.token_urlsafe(12) + "aA1!"
    idp.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
    return idp.initiate_auth(
        ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )["AuthenticationResult"]


def app_client(pool_id: str, name: str) -> str:
    return boto3.client("cognito-idp").create_user_pool_client(
        UserPoolId=pool_id, ClientName=name, ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]


def other_pool_with(username: str, tenant: str) -> tuple[str, str]:
    """Another user pool (and app client) with a user of the same name and tenant."""
    idp = boto3.client("cognito-idp")
    pool_id = idp.create_user_pool(
        PoolName="someone-elses",
        Schema=[{"Name": "tenant", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    idp.admin_create_user(
        UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "custom:tenant", "Value": tenant}],
    )
    return pool_id, app_client(pool_id, "someone-elses")


def get_downloads(stack, token: str):
    return stack.client.http.get("/downloads", headers={"Authorization": token})


def assert_refused(resp, because: str = "") -> None:
    """Refused by the gateway (not the app's own 401), in the API's error envelope.

    ``because`` (part of the message) shows which check refused the token, so a
    case cannot pass on another check than the one it is about.
    """
    assert resp.status_code == 401, resp.body
    body = json.loads(resp.body)
    assert set(body) == {"error"} and body["error"]["code"] == "unauthorized", body
    assert isinstance(body["error"]["message"], str) and because in body["error"]["message"], body
    assert resp.headers.get("x-amzn-ErrorType") == "UnauthorizedException", resp.headers


def test_a_valid_id_token_is_admitted(stack):
    resp = get_downloads(stack, stack.users["alice"].token)
    assert resp.status_code == 200, resp.body


def test_a_bearer_prefixed_token_is_admitted(stack):
    resp = get_downloads(stack, f"Bearer {stack.users['alice'].token}")
    assert resp.status_code == 200, resp.body


@pytest.mark.parametrize("token", ["garbage", "Bearer garbage", "a.b.c", "Bearer "])
def test_a_garbage_token_is_401(stack, token):
    assert_refused(get_downloads(stack, token))


def test_a_tampered_payload_is_401(stack):
    alice, bob = stack.users["alice"], stack.users["bob"]
    assert_refused(get_downloads(stack, with_claims(alice.token, sub=bob.sub)), "signature")


@pytest.mark.parametrize("kid,reason", [(MOTO_KID, "signature"), ("rotated-away", "kid")])
def test_a_token_signed_by_another_key_is_401(stack, kid, reason):
    # Under moto's key id the signature check refuses it; under an unknown one, the key lookup.
    other_key = RSAKey.generate_key(2048)
    token = sign(claims_of(stack.users["alice"].token), other_key, kid)
    assert_refused(get_downloads(stack, token), reason)


def test_an_alg_none_token_is_401(stack):
    assert_refused(get_downloads(stack, unsigned(claims_of(stack.users["alice"].token))), "'none'")


def test_a_token_of_another_user_pool_is_401(stack):
    # moto signs every pool's tokens with the same key: only ``iss`` tells them apart.
    pool_id, client_id = other_pool_with("alice", "acme")
    token = login(pool_id, client_id, "alice")["IdToken"]
    assert claims_of(token)["iss"] != stack.pool.issuer
    assert_refused(get_downloads(stack, token), "'iss'")


def test_a_token_for_another_app_client_is_401(stack):
    client_id = app_client(stack.pool.pool_id, "another-app")
    token = login(stack.pool.pool_id, client_id, "alice")["IdToken"]
    assert claims_of(token)["iss"] == stack.pool.issuer and claims_of(token)["aud"] == client_id
    assert_refused(get_downloads(stack, token), "'aud'")


def test_an_access_token_is_401(stack):
    # What InitiateAuth returns next to the ID token: client_id instead of aud, token_use=access.
    token = login(stack.pool.pool_id, stack.pool.client_id, "alice")["AccessToken"]
    assert claims_of(token)["token_use"] == "access"
    assert_refused(get_downloads(stack, token))


def test_an_id_token_relabelled_as_access_is_401(stack):
    # Signed by the pool's own key, so only the token_use check can refuse it.
    claims = claims_of(stack.users["alice"].token) | {"token_use": "access"}
    assert_refused(get_downloads(stack, sign(claims, moto_signing_key())), "'token_use'")


def expired(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims an hour past their expiry, ``exp`` first (claims are checked in their order)."""
    an_hour_ago = int(time.time()) - 3600
    return {"exp": an_hour_ago, "iat": an_hour_ago - 3600} | {
        k: v for k, v in claims.items() if k not in {"exp", "iat"}}


def test_an_expired_token_is_401_token_expired(stack):
    # What a client should do differs: sign in again (or refresh), not give up.
    resp = get_downloads(stack, sign(expired(claims_of(stack.users["alice"].token)), moto_signing_key()))
    assert resp.status_code == 401, resp.body
    assert json.loads(resp.body) == {
        "error": {"code": "token_expired", "message": "Your sign-in has expired; sign in again"}}
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"'), resp.headers
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("change", [{"aud": "another-app"}, {"token_use": "access"}])
def test_an_expired_token_that_is_wrong_otherwise_is_not_called_expired(stack, change):
    # Signing in again would not help: the token is refused for what else is wrong with it.
    claims = expired(claims_of(stack.users["alice"].token)) | change
    assert_refused(get_downloads(stack, sign(claims, moto_signing_key())), f"'{next(iter(change))}'")


def test_a_token_signed_by_moto_is_admitted(stack):
    # The forging helper itself is sound: the same claims, freshly signed, pass.
    token = sign(claims_of(stack.users["alice"].token), moto_signing_key())
    assert get_downloads(stack, token).status_code == 200


def test_bob_cannot_read_alices_task_with_her_sub_in_his_token(stack):
    task = stack.create("alice")
    alice, bob = stack.users["alice"], stack.users["bob"]
    path = f"/downloads/{task['id']}"

    honest = stack.client.http.get(path, headers=bob.headers)
    assert honest.status_code == 404, honest.body

    forged = with_claims(bob.token, sub=alice.sub)
    for route in (path, f"{path}/file"):
        assert_refused(stack.client.http.get(route, headers={"Authorization": forged}), "signature")

    # The forged claims do name alice: signed with the pool's key they read her task,
    # so the signature check is all that stands between bob and it.
    resigned = sign(claims_of(forged), moto_signing_key())
    assert stack.client.http.get(path, headers={"Authorization": resigned}).status_code == 200
