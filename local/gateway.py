"""``chalice local`` with a Cognito authorizer that verifies tokens.

``chalice.local.LocalGatewayAuthorizer`` decodes a Cognito JWT without
checking it, so any string shaped like a JWT becomes a principal. Here the
Cognito case is handled by :class:`~local.cognito.TokenVerifier`; everything
else (routing, CORS preflight, custom authorizers, the Lambda event shape) is
chalice's own code, wired in through its documented extension points
(``handler_cls`` and ``server_cls`` of ``LocalDevServer``).
"""

from __future__ import annotations

import functools
import json
import logging
from http.server import BaseHTTPRequestHandler
from typing import Any

from chalice.app import Chalice, CognitoUserPoolAuthorizer
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LambdaContext,
    LocalChalice,
    LocalDevServer,
    LocalGateway,
    LocalGatewayAuthorizer,
    NotAuthorizedError,
    ThreadedHTTPServer,
)

from local.cognito import TokenError, TokenVerifier

log = logging.getLogger("local.api")

BEARER = "bearer "
# Connections the kernel may hold for the server before it accepts them.
LISTEN_BACKLOG = 128


def token_from_header(value: str) -> str:
    """Accept both ``Authorization: <token>`` and ``Authorization: Bearer <token>``."""
    value = value.strip()
    if value[: len(BEARER)].lower() == BEARER:
        value = value[len(BEARER) :].strip()
    return value


def unauthorized(request_id: str, message: str) -> NotAuthorizedError:
    """A 401 in the API's error envelope (API.md), raised before the app is called."""
    body = {"error": {"code": "unauthorized", "message": message}}
    return NotAuthorizedError(
        {
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": "UnauthorizedException",
            "WWW-Authenticate": 'Bearer error="invalid_token"',
            "Content-Type": "application/json",
        },
        json.dumps(body).encode("utf-8"),
    )


class VerifyingAuthorizer(LocalGatewayAuthorizer):
    """Cognito routes: verify the ID token; other routes: chalice's behaviour.

    A request without an ``Authorization`` header is passed on without claims
    so the app answers 401 itself (API.md: never anonymous); a header whose
    token does not verify is refused here with 401.
    """

    def __init__(self, app_object: Chalice, verifier: TokenVerifier) -> None:
        super().__init__(app_object)
        self._verifier = verifier

    def authorize(
        self, raw_path: str, lambda_event: dict[str, Any], lambda_context: LambdaContext
    ) -> tuple[dict[str, Any], LambdaContext]:
        route_entry = self._route_for_event(lambda_event)
        authorizer = route_entry.authorizer if route_entry else None
        if not isinstance(authorizer, CognitoUserPoolAuthorizer):
            return super().authorize(raw_path, lambda_event, lambda_context)
        header = (lambda_event.get("headers") or {}).get("authorization")
        if header is None:
            return lambda_event, lambda_context
        try:
            claims = self._verifier.verify(token_from_header(header))
        except TokenError as exc:
            log.info("refused token on %s %s: %s", self._method(lambda_event), raw_path, exc)
            raise unauthorized(lambda_context.aws_request_id, f"invalid token: {exc}") from None
        principal = claims.get("cognito:username") or claims["sub"]
        auth_result = {"context": {"claims": claims}, "principalId": principal}
        return self._update_lambda_event(lambda_event, auth_result), lambda_context

    @staticmethod
    def _method(lambda_event: dict[str, Any]) -> str:
        return str(lambda_event.get("requestContext", {}).get("httpMethod", "?"))


class VerifyingGateway(LocalGateway):
    """chalice's ``LocalGateway`` with the verifying authorizer in place."""

    def __init__(self, app_object: Chalice, config: Config, verifier: TokenVerifier) -> None:
        super().__init__(app_object, config)
        self._authorizer = VerifyingAuthorizer(app_object, verifier)


class VerifyingRequestHandler(ChaliceRequestHandler):
    """chalice's request handler, using :class:`VerifyingGateway` and our logging."""

    def __init__(
        self,
        request: Any,
        client_address: tuple[str, int],
        server: Any,
        app_object: Chalice,
        config: Config,
        verifier: TokenVerifier,
    ) -> None:
        # ChaliceRequestHandler.__init__ would build a plain LocalGateway and then
        # serve the request at once, so set ours up and go straight to the base.
        self.local_gateway = VerifyingGateway(app_object, config, verifier)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class BackloggedHTTPServer(ThreadedHTTPServer):
    """chalice's threaded server with a listen queue that absorbs a burst of clients.

    socketserver listens with a backlog of 5: when more clients connect at
    once than the accept loop keeps up with, Linux drops their SYNs (a stall
    of a second or more; some requests were never answered) and macOS resets
    them. A browser plus a few scripts easily open 20 connections at once.
    """

    request_queue_size = LISTEN_BACKLOG


def make_local_app(app_object: Chalice) -> Chalice:
    """Give the app thread-local ``current_request``, as ``chalice local`` does.

    The server is threaded; without this, concurrent requests would see each
    other's ``app.current_request``. Unlike ``chalice.local.create_local_server``
    this builds a fresh subclass instead of rebasing a shared one.
    """
    if not isinstance(app_object, LocalChalice):
        local_cls = type("LocalStack" + type(app_object).__name__, (LocalChalice, type(app_object)), {})
        app_object.__class__ = local_cls
    return app_object


def create_server(
    app_object: Chalice, config: Config, host: str, port: int, verifier: TokenVerifier
) -> LocalDevServer:
    """A bound (not yet serving) ``chalice local`` server for ``app_object``."""
    handler = functools.partial(VerifyingRequestHandler, verifier=verifier)
    return LocalDevServer(
        make_local_app(app_object),
        config,
        host,
        port,
        handler_cls=handler,
        server_cls=BackloggedHTTPServer,
    )
