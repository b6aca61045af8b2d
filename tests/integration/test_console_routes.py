"""The web console's routes: the page, its config, its versioned assets, the API description,
and the headers every answer carries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from chalice.test import Client

import app as app_module
from chalicelib import webconsole

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> Client:
    with Client(app_module.app) as test_client:
        yield test_client


def header(response, name: str) -> str:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower(), "")


def test_the_page_is_served_at_the_root_with_a_strict_policy(client: Client) -> None:
    response = client.http.get("/")
    assert response.status_code == 200
    assert header(response, "content-type") == "text/html; charset=utf-8"
    assert header(response, "cache-control") == "no-store"
    policy = dict(part.strip().split(" ", 1)
                  for part in header(response, "content-security-policy").split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    # the page talks to itself and to Cognito's endpoint, nothing else
    assert policy["connect-src"] == "'self' https://cognito-idp.us-east-1.amazonaws.com"
    assert "unsafe" not in header(response, "content-security-policy")


def test_the_page_has_no_inline_script_or_style(client: Client) -> None:
    page = client.http.get("/").body.decode()
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S):
        assert script.strip() == ""
    assert re.findall(r"<script\b[^>]*\bsrc=", page), "the page loads its script from a file"
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son\w+=", page), "no inline event handler"


def test_the_assets_are_named_by_their_version_and_cached_for_a_year(client: Client) -> None:
    page = client.http.get("/").body.decode()
    referenced = re.findall(r'(?:src|href)="(console/[^"]+)"', page)
    assert {r.rsplit("/", 1)[1] for r in referenced} >= {"app.js", "console.css"}
    version = webconsole.version()
    for path in referenced:
        assert path.startswith(f"console/{version}/")
        response = client.http.get("/" + path)
        assert response.status_code == 200, path
        assert header(response, "cache-control") == "public, max-age=31536000, immutable"
        assert header(response, "x-content-type-options") == "nosniff"
    js = client.http.get(f"/console/{version}/app.js")
    assert header(js, "content-type") == "text/javascript; charset=utf-8"


def test_every_module_the_page_imports_is_served(client: Client) -> None:
    """Relative ES module imports resolve under the same version."""
    version = webconsole.version()
    pending, seen = ["app.js"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.http.get(f"/console/{version}/{name}")
        assert response.status_code == 200, name
        pending += re.findall(r'from\s+"\./([\w.-]+\.js)"', response.body.decode())
    assert {"app.js", "api.js", "auth.js", "i18n.js", "dom.js"} <= seen


@pytest.mark.parametrize("path", [
    "/console/000000000000/app.js",  # another version: gone, not stale
    "/console/{version}/missing.js",
    "/console/{version}/index.html",  # the page is the root, never an asset
    "/console/{version}/..%2Fapp.py",
    "/console/{version}/..%2F..%2Fapp.py",
])
def test_anything_else_under_console_is_a_404_in_the_envelope(client: Client, path: str) -> None:
    response = client.http.get(path.format(version=webconsole.version()))
    assert response.status_code == 404
    assert json.loads(response.body)["error"]["code"] == "not_found"
    assert header(response, "cache-control") == "no-store"


def test_the_config_says_where_to_sign_in(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setattr(app_module, "settings", replace(
        app_module.settings, user_pool_client_id="abc123", cognito_endpoint_url="http://127.0.0.1:5000"))
    response = client.http.get("/console/config.json")
    assert response.status_code == 200
    assert json.loads(response.body) == {
        "region": "us-east-1", "client_id": "abc123", "cognito_endpoint": "http://127.0.0.1:5000",
        "version": webconsole.version(), "openapi": "openapi.json"}
    assert header(response, "cache-control") == "no-store"
    page = client.http.get("/")
    assert "connect-src 'self' http://127.0.0.1:5000;" in header(page, "content-security-policy")


def test_openapi_json_is_the_yaml_document_served(client: Client) -> None:
    response = client.http.get("/openapi.json")
    assert response.status_code == 200
    served = json.loads(response.body)
    source = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text("utf-8"))
    assert served["servers"] == [{"url": "/", "description": "this deployment"}]
    assert {k: v for k, v in served.items() if k != "servers"} == {
        k: v for k, v in source.items() if k != "servers"}


@pytest.mark.parametrize("request_path, route, root", [
    (None, "/", "/"),
    ("/", "/", "/"),
    ("/api", "/", "/api/"),  # a stage's root without its slash still reaches the page
    ("/api/", "/", "/api/"),
    ("/api/openapi.json", "/openapi.json", "/api/"),
    ("/openapi.json", "/openapi.json", "/"),
    ("/v1/exports/", "/", "/v1/exports/"),
])
def test_the_api_root_is_where_the_browser_sees_it(request_path: str | None, route: str, root: str) -> None:
    assert webconsole.api_root(request_path, route) == root


def test_the_base_href_is_escaped() -> None:
    page = webconsole.page('/a"><script>x</script>')
    assert '<base href="/a&quot;&gt;&lt;script&gt;x&lt;/script&gt;/">' in page


@pytest.mark.parametrize("method, path", [
    ("GET", "/health"), ("GET", "/downloads"), ("GET", "/kinds"), ("POST", "/health"),
])
def test_every_api_answer_is_uncacheable_and_inert(client: Client, method: str, path: str) -> None:
    response = client.http.request(method, path)
    assert header(response, "cache-control") == "no-store"
    assert header(response, "content-security-policy") == webconsole.API_POLICY
    assert header(response, "x-content-type-options") == "nosniff"
    assert header(response, "x-frame-options") == "DENY"
