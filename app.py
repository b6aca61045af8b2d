"""Download Center: HTTP routes and the build queue handler.

Entry points only: parse the request, call a use case, shape the response.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import wraps
from typing import Any

from chalice import Chalice, CognitoUserPoolAuthorizer, Rate, Response

from chalicelib import logs, metrics, openapi, webconsole
from chalicelib.config import Settings
from chalicelib.errors import ApiError, MethodNotAllowed, NotFound, UnsupportedMediaType
from chalicelib.notifier import EVENT_PATTERN, Notifier
from chalicelib.principal import Principal, Scope
from chalicelib.services import Downloads
from chalicelib.sweeper import Sweeper
from chalicelib.validation import (
    parse_create,
    parse_json_body,
    parse_list_query,
    parse_rename,
    validate_idempotency_key,
)
from chalicelib.worker import Worker

# JSON lines (Powertools' Logger, at LOG_LEVEL), chalicelib's loggers included; app.log is
# that same logger, so chalice must not add a plain-text handler of its own.
log = logs.setup()
app = Chalice(app_name="download-center", configure_logs=False)


@app.middleware("http")
def log_keys(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Every line of a request names it, and is never taken for a build's (chalicelib.logs)."""
    with logs.request(event):
        return get_response(event)


@app.middleware("http")
def security_headers(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Every answer is uncacheable and inert unless its route says otherwise.

    API responses carry tasks and presigned URLs: no shared or browser cache may
    keep them (``Cache-Control: no-store``), and no browser may run or frame them.
    The console's page and assets set their own policy and caching.
    """
    response = get_response(event)
    present = {name.lower() for name in response.headers}
    for name, value in webconsole.SECURITY_HEADERS.items():
        if name.lower() not in present:
            response.headers[name] = value
    return response


@app.middleware("http")
def envelope(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """chalice's own answers in the contract's envelope too.

    chalice refuses some requests before any view runs (a ``Content-Type`` the
    route does not take is its 415) and turns an exception outside a view into
    a 500, both with a ``{"Code", "Message"}`` body of its own; clients should
    meet one error shape only.
    """
    try:
        response = get_response(event)
    except Exception:
        log.exception("unhandled error outside a view")
        return _error(500, INTERNAL_ERROR)
    body = response.body
    if not (isinstance(body, dict) and set(body) == {"Code", "Message"}):
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    if body["Code"] == "UnsupportedMediaType":
        accepted = app.routes[event.context["resourcePath"]][event.method].content_types
        exc = UnsupportedMediaType(
            f"This route does not take Content-Type {event.headers.get('content-type')!r}; "
            f"send {accepted[0]}.")
        return _error(exc.status, exc.body(), headers)
    code = "internal_error" if response.status_code >= 500 else "bad_request"
    return _error(response.status_code, {"error": {"code": code, "message": body["Message"]}}, headers)


settings = Settings.from_env()
downloads = Downloads(settings)
worker = Worker(settings)

# The provider ARN is a placeholder that `make package` rewrites to the
# deployment's user pool (created, or passed as a parameter).
cognito = CognitoUserPoolAuthorizer(
    "cognito",
    provider_arns=[os.environ.get(
        "USER_POOL_ARN", "arn:aws:cognito-idp:us-east-1:000000000000:userpool/placeholder")],
)

JSON = {"Content-Type": "application/json; charset=utf-8"}
#: What a route with a JSON body accepts; the body is read as JSON whichever of these it names.
JSON_BODY_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain"]
INTERNAL_ERROR = {"error": {"code": "internal_error", "message": "Something went wrong on our side."}}


def _json(body: Any) -> str:
    """UTF-8 JSON: task and file names stay readable instead of \\u escapes."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(body=_json(body), status_code=status, headers={**JSON, **(headers or {})})


def api(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Map ApiError to the contract's envelope; anything else to a bare 500."""

    @wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return handler(*args, **kwargs)
        except ApiError as exc:
            return _error(exc.status, exc.body(), exc.headers())
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return _error(500, INTERNAL_ERROR)

    return wrapper


def principal() -> Principal:
    context = app.current_request.context or {}
    claims = (context.get("authorizer") or {}).get("claims")
    return downloads.policy.principal(claims)


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=_json(body), status_code=status, headers={**JSON, **(headers or {})})


@app.route("/health", methods=["GET"])
@api
def health() -> Response:
    return ok({"status": "ok"})


# -- the web console and the API's description (no sign-in: the page signs in itself) --

@app.route("/", methods=["GET"])
@api
def console_page() -> Response:
    request_path = (app.current_request.context or {}).get("path")
    return Response(body=webconsole.page(request_path), status_code=200, headers={
        "Content-Type": webconsole.PAGE_TYPE,
        "Content-Security-Policy": webconsole.page_policy(settings.cognito_endpoint),
    })


@app.route("/console/config.json", methods=["GET"])
@api
def console_config() -> Response:
    """Where the page signs in: the region, the app client and Cognito's endpoint."""
    return ok({
        "region": settings.region,
        "client_id": settings.user_pool_client_id,
        "cognito_endpoint": settings.cognito_endpoint,
        "version": webconsole.version(),
        "openapi": "openapi.json",
    })


@app.route("/console/{version}/{name}", methods=["GET"])
@api
def console_asset(version: str, name: str) -> Response:
    found = webconsole.asset(version, name)
    if found is None:
        raise NotFound(f"There is no console file {name!r} in version {version!r}.")
    return Response(body=found.body, status_code=200, headers={
        "Content-Type": found.content_type, "Cache-Control": webconsole.ASSET_CACHE})


@app.route("/openapi.json", methods=["GET"])
@api
def openapi_document() -> Response:
    """The contract, with this deployment's root as its server."""
    request_path = (app.current_request.context or {}).get("path")
    return ok(openapi.served(webconsole.api_root(request_path, "/openapi.json")))


@app.route("/kinds", methods=["GET"], authorizer=cognito)
@api
def kinds() -> Response:
    return ok(downloads.kinds(principal()))


@app.route("/downloads", methods=["POST"], authorizer=cognito, content_types=JSON_BODY_TYPES)
@api
def create_download() -> Response:
    who = principal()
    request = app.current_request
    key = validate_idempotency_key((request.headers or {}).get("idempotency-key"))
    body = parse_json_body(request.raw_body)
    task, is_new = downloads.create(who, parse_create(body), body, key)
    headers = {"Location": f"/downloads/{task['id']}"}
    if key and not is_new:
        headers["Idempotent-Replayed"] = "true"
    return ok(task, 202, headers)


@app.route("/downloads", methods=["GET"], authorizer=cognito)
@api
def list_downloads() -> Response:
    who = principal()
    query = parse_list_query(app.current_request.query_params, sees_others=who.scope > Scope.OWN)
    return ok(downloads.list(who, query))


@app.route("/downloads/{task_id}", methods=["GET"], authorizer=cognito)
@api
def get_download(task_id: str) -> Response:
    return ok(downloads.get(principal(), task_id))


# HEAD too: clients and link checkers learn where the file is without a body
# (the HTTP layer drops it: the local stack's server, or API Gateway).
@app.route("/downloads/{task_id}/file", methods=["GET", "HEAD"], authorizer=cognito)
@api
def download_file(task_id: str) -> Response:
    url = downloads.file_url(principal(), task_id)
    return Response(body="", status_code=302,
                    headers={"Location": url, "Cache-Control": "no-store"})


@app.route("/downloads/{task_id}/cancel", methods=["POST"], authorizer=cognito,
           content_types=["application/json", "text/plain", "application/octet-stream"])
@api
def cancel_download(task_id: str) -> Response:
    return ok(downloads.cancel(principal(), task_id), 202)


@app.route("/downloads/{task_id}/retry", methods=["POST"], authorizer=cognito,
           content_types=["application/json", "text/plain", "application/octet-stream"])
@api
def retry_download(task_id: str) -> Response:
    return ok(downloads.retry(principal(), task_id), 202)


@app.route("/downloads/{task_id}", methods=["PATCH"], authorizer=cognito, content_types=JSON_BODY_TYPES)
@api
def rename_download(task_id: str) -> Response:
    body = parse_json_body(app.current_request.raw_body)
    return ok(downloads.rename(principal(), task_id, parse_rename(body)))


@app.route("/downloads/{task_id}", methods=["DELETE"], authorizer=cognito)
@api
def delete_download(task_id: str) -> Response:
    downloads.delete(principal(), task_id)
    return Response(body="", status_code=204)


# -- every other method of a routed path: the app's 405 ------------------------

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods an API Gateway REST API can route; it answers any other itself (404)."""
METHOD_NOT_ALLOWED = "method_not_allowed"


def served_methods(path: str) -> list[str]:
    """The methods the API serves on ``path``: its routes, without the 405s."""
    entries = app.routes[path]
    return [m for m in HTTP_METHODS if m in entries and entries[m].view_name != METHOD_NOT_ALLOWED]


@api
def method_not_allowed(**_path_params: str) -> Response:
    """A method this path does not serve: 405, ``Allow`` listing those it does."""
    request = app.current_request
    path = request.context["resourcePath"]
    if app.routes[path][request.method].authorizer is not None:
        principal()  # sign in first, as for the path's own methods
    raise MethodNotAllowed(request.method, path, served_methods(path))


def route_other_methods() -> None:
    """Route the methods each path lacks to :func:`method_not_allowed`.

    API Gateway never passes a method a path lacks to the app: it answers
    MISSING_AUTHENTICATION_TOKEN, a 404. Registered here, derived from every
    route (so it runs last), they reach the app both behind API Gateway and on
    chalice local, and get a 405 with ``Allow``. A path whose routes all need a token
    needs one for its 405 too (authentication before method dispatch, as with
    Stripe and most frameworks). On a path with CORS, OPTIONS stays the
    preflight API Gateway answers. Any content type is taken: the 405 comes
    before the body matters.
    """
    for path, entries in list(app.routes.items()):
        others = [m for m in HTTP_METHODS if m not in entries]
        if any(entry.cors for entry in entries.values()) and "OPTIONS" in others:
            others.remove("OPTIONS")
        authorizers = {entry.authorizer for entry in entries.values()}
        if others:
            authorizer = authorizers.pop() if len(authorizers) == 1 else None
            app.route(path, methods=others, name=METHOD_NOT_ALLOWED, authorizer=authorizer,
                      content_types=["*/*"])(method_not_allowed)


# One message an invocation: every build starts with a whole invocation's time
# budget, instead of the later builds of a batch inheriting what the first left.
@app.on_sqs_message(queue=settings.build_queue_name, batch_size=1)
def build_worker(event: Any) -> dict[str, Any]:
    context = event.context
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    records = [record.to_dict() for record in event]
    with logs.invocation(context):
        try:
            return worker.handle_batch(records, remaining) if remaining else worker.handle_batch(records)
        finally:
            metrics.flush()  # once an invocation (chalice's event objects don't fit log_metrics)


# "Your export is ready" mail, from the events every ending publishes (on the stack's bus:
# tools/package.py points the rule there).
@app.on_cw_event(EVENT_PATTERN, name="notifier")
def notifier(event: Any) -> None:
    with logs.invocation(event.context):
        Notifier(settings, worker.repo).handle(event.detail_type, event.detail)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweeper(event: Any) -> None:
    with logs.invocation(event.context):
        try:
            Sweeper(settings, worker.repo).sweep()
        finally:
            metrics.flush()


# Last, so that it sees every route.
route_other_methods()
