"""``chalice local`` with a Cognito authorizer that verifies tokens.

``chalice.local.LocalGatewayAuthorizer`` decodes a Cognito JWT without
checking it, so any string shaped like a JWT becomes a principal. Here the
Cognito case is handled by :class:`~local.cognito.TokenVerifier`; everything
else (routing, CORS preflight, custom authorizers, the Lambda event shape) is
chalice's own code, wired in through its documented extension points
(``handler_cls`` and ``server_cls`` of ``LocalDevServer``).

What API Gateway answers itself, without calling the Lambda, is the
deployment's gateway response rendered from ``infra/resources.json``, so the
two cannot drift apart: a path no route matches, or a method API Gateway
cannot route (``TRACE``, ``PROPFIND``, ...), gets MISSING_AUTHENTICATION_TOKEN
(``404 not_found``) instead of chalice's 403, which echoes the caller's
token, or http.server's HTML 501; a token that does not verify gets
UNAUTHORIZED (``401 unauthorized``), an expired one EXPIRED_TOKEN (``401
token_expired``). A method a routed path lacks reaches the app, which routes
every such method to its ``405 method_not_allowed`` (``app.route_other_methods``),
here as behind API Gateway.

The request line's raw bytes are read as UTF-8, as API Gateway reads them:
http.server decodes them as Latin-1, and chalice would then match a raw
``?task_name=用户`` as mojibake.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import string
import urllib.parse
import uuid
from dataclasses import dataclass
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
    LocalGatewayException,
    RouteMatcher,
    ThreadedHTTPServer,
)

from local.cognito import TokenError, TokenExpired, TokenVerifier
from local.provision import load_template

log = logging.getLogger("local.api")

BEARER = "bearer "
# Connections the kernel may hold for the server before it accepts them.
LISTEN_BACKLOG = 128

# The gateway responses the local gateway gives: API Gateway's status and message for
# each before the template customises it (a type the template does not customise falls
# back to DEFAULT_4XX, then to API Gateway's own body), and the x-amzn-ErrorType sent
# with it (behind API Gateway an expired Cognito token is an UnauthorizedException).
MISSING_ROUTE = "MISSING_AUTHENTICATION_TOKEN"
UNAUTHORIZED = "UNAUTHORIZED"
EXPIRED_TOKEN = "EXPIRED_TOKEN"
DEFAULTS: dict[str, tuple[int, str, str]] = {
    MISSING_ROUTE: (403, "Missing Authentication Token", "MissingAuthenticationTokenException"),
    UNAUTHORIZED: (401, "Unauthorized", "UnauthorizedException"),
    EXPIRED_TOKEN: (403, "The security token included in the request is expired", "UnauthorizedException"),
}
DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
MESSAGE_VARIABLE = "$context.error.messageString"
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
# What may stay as it is in a request target; anything else (the bytes of raw UTF-8) is %XX.
TARGET_SAFE = "".join(c for c in string.printable if c not in string.whitespace)


def token_from_header(value: str) -> str:
    """Accept both ``Authorization: <token>`` and ``Authorization: Bearer <token>``."""
    value = value.strip()
    if value[: len(BEARER)].lower() == BEARER:
        value = value[len(BEARER) :].strip()
    return value


def utf8_request_target(target: str) -> str:
    """The request target http.server decoded as Latin-1, with its non-ASCII bytes as %XX.

    API Gateway reads a raw UTF-8 query string (``?task_name=用户``, as curl
    sends it) as the percent-encoded one; chalice's ``parse_qs`` decodes %XX
    as UTF-8, so both forms reach the app as the same text.
    """
    return urllib.parse.quote(target.encode("latin-1"), safe=TARGET_SAFE)


@dataclass(frozen=True)
class GatewayResponse:
    """A rendered gateway response: what API Gateway sends without calling the Lambda."""

    status: int
    headers: dict[str, str]
    body: bytes


def render_gateway_response(
    template: dict[str, Any], response_type: str, default_status: int, message: str
) -> GatewayResponse:
    """``RestAPI.GatewayResponses[response_type]`` of the template, as API Gateway renders it.

    Read from the deployment template rather than restated, so the local
    answer cannot drift from the deployed one. The template is SAM's
    (``ResponseParameters: {Headers: ...}``, as ``AWS::Serverless::Api``
    takes it). Only what this API uses is supported
    (``$context.error.messageString``, static header values); any other
    mapping raises at start-up instead of being answered wrongly.
    """
    responses = template.get("Resources", {}).get("RestAPI", {}).get("Properties", {})
    responses = responses.get("GatewayResponses", {})
    spec = responses.get(response_type) or responses.get("DEFAULT_4XX") or {}
    status = int(spec.get("StatusCode", default_status))
    body = spec.get("ResponseTemplates", {}).get("application/json", DEFAULT_TEMPLATE)
    body = body.replace(MESSAGE_VARIABLE, json.dumps(message))
    if "$" in body:
        raise ValueError(f"{response_type}: the local gateway cannot render {body!r}")
    json.loads(body)  # API Gateway would send it as JSON: make sure it is
    headers = {"Content-Type": "application/json"}
    parameters = dict(spec.get("ResponseParameters", {}))
    for name, value in parameters.pop("Headers", {}).items():
        if not HEADER_NAME.match(name) or not (len(value) >= 2 and value[0] == value[-1] == "'"):
            raise ValueError(f"{response_type}: the local gateway cannot map header {name} = {value}")
        headers[name] = value[1:-1]
    if parameters:
        raise ValueError(f"{response_type}: the local gateway cannot map {sorted(parameters)}")
    return GatewayResponse(status, headers, body.encode("utf-8"))


class GatewayResponseError(LocalGatewayException):
    """A gateway response raised instead of invoking the app; chalice's handler sends it."""

    def __init__(self, response: GatewayResponse, error_type: str) -> None:
        headers = {
            **response.headers,
            "x-amzn-RequestId": str(uuid.uuid4()),
            "x-amzn-ErrorType": error_type,
        }
        super().__init__(headers, response.body)
        self.CODE = response.status


class GatewayResponses:
    """The deployment's gateway responses that the local gateway answers with.

    Every one of :data:`DEFAULTS` is rendered once at start-up, so a template
    the local gateway cannot mirror stops the stack instead of a request.
    """

    def __init__(self, template: dict[str, Any]) -> None:
        self._template = template
        for response_type in DEFAULTS:
            self.render(response_type)

    def render(self, response_type: str, message: str | None = None) -> GatewayResponse:
        """The response, with ``message`` where the template uses API Gateway's own."""
        status, default_message, _ = DEFAULTS[response_type]
        return render_gateway_response(self._template, response_type, status, message or default_message)

    def error(self, response_type: str, message: str | None = None) -> GatewayResponseError:
        """The response as the exception chalice's request handler sends."""
        return GatewayResponseError(self.render(response_type, message), DEFAULTS[response_type][2])


def gateway_responses() -> GatewayResponses:
    """The gateway responses of ``infra/resources.json``."""
    return GatewayResponses(load_template())


class VerifyingAuthorizer(LocalGatewayAuthorizer):
    """Cognito routes: verify the ID token; other routes: chalice's behaviour.

    A request without an ``Authorization`` header is passed on without claims
    so the app answers 401 itself (docs/openapi.yaml: never anonymous); a header whose
    token does not verify is refused here with the UNAUTHORIZED gateway response
    (the reason in its message), an expired token with EXPIRED_TOKEN. Behind
    API Gateway the Cognito authorizer answers both with UNAUTHORIZED (an expired
    token's message says so); gateway responses cannot tell them apart.
    """

    def __init__(self, app_object: Chalice, verifier: TokenVerifier, responses: GatewayResponses) -> None:
        super().__init__(app_object)
        self._verifier = verifier
        self._responses = responses

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
            if isinstance(exc, TokenExpired):
                raise self._responses.error(EXPIRED_TOKEN) from None
            raise self._responses.error(UNAUTHORIZED, f"invalid token: {exc}") from None
        principal = claims.get("cognito:username") or claims["sub"]
        auth_result = {"context": {"claims": claims}, "principalId": principal}
        return self._update_lambda_event(lambda_event, auth_result), lambda_context

    @staticmethod
    def _method(lambda_event: dict[str, Any]) -> str:
        return str(lambda_event.get("requestContext", {}).get("httpMethod", "?"))


class VerifyingGateway(LocalGateway):
    """chalice's ``LocalGateway`` with the verifying authorizer and API Gateway's routing."""

    def __init__(
        self,
        app_object: Chalice,
        config: Config,
        verifier: TokenVerifier,
        responses: GatewayResponses,
    ) -> None:
        super().__init__(app_object, config)
        self._authorizer = VerifyingAuthorizer(app_object, verifier, responses)
        self._routes = RouteMatcher(list(app_object.routes))
        self._responses = responses

    def handle_request(
        self, method: str, path: str, headers: dict[str, Any], body: bytes | None
    ) -> dict[str, Any]:
        """Answer a request API Gateway would not route as it would; the rest as chalice does."""
        if not self._is_routed(method, path):
            raise self._responses.error(MISSING_ROUTE)
        return super().handle_request(method, path, headers, body)

    def _is_routed(self, method: str, path: str) -> bool:
        """Does the API have this method on this path?

        OPTIONS on a path without one stays chalice's: the CORS preflight API
        Gateway answers on a path with CORS.
        """
        try:
            route = self._routes.match_route(path).route
        except ValueError:
            return False
        return method == "OPTIONS" or method in self._app_object.routes[route]


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
        responses: GatewayResponses,
    ) -> None:
        # ChaliceRequestHandler.__init__ would build a plain LocalGateway and then
        # serve the request at once, so set ours up and go straight to the base.
        self.local_gateway = VerifyingGateway(app_object, config, verifier, responses)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def parse_request(self) -> bool:
        """As http.server, with the request target's raw UTF-8 read as API Gateway reads it."""
        parsed = super().parse_request()
        if parsed:
            self.path = utf8_request_target(self.path)
        return parsed

    def __getattr__(self, name: str) -> Any:
        """Every method name reaches the gateway, not only the seven chalice lists.

        http.server answers a method without a ``do_<METHOD>`` with an HTML
        501; API Gateway takes any method and answers one the API lacks with
        the missing-route gateway response.
        """
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def _send_http_response_with_body(self, code: int, headers: dict[str, Any], body: str | bytes) -> None:
        """As chalice, but a HEAD response carries the headers only (RFC 9110, 9.3.2).

        A body after a HEAD response would be read as the start of the next
        response on a kept-alive connection.
        """
        if self.command != "HEAD":
            super()._send_http_response_with_body(code, headers, body)
            return
        length = len(body.encode("utf-8") if isinstance(body, str) else body)
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self._send_headers(headers)

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
    handler = functools.partial(
        VerifyingRequestHandler, verifier=verifier, responses=gateway_responses()
    )
    return LocalDevServer(
        make_local_app(app_object),
        config,
        host,
        port,
        handler_cls=handler,
        server_cls=BackloggedHTTPServer,
    )
