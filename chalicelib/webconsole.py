"""The web console's files, as the API serves them.

The console is static: an HTML page and plain ES modules and a stylesheet in
``chalicelib/console/`` (shipped in the Lambda package, no build step). Its
assets are served under one version, a digest of all of them, so a browser may
keep them for a year: a new deployment changes the digest, and the page (never
cached) names the new one. The page learns where the API is from its own
``<base href>``, which the server writes, so the console works at a stage's
root (``/api/``), behind a custom domain, and locally alike.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
PAGE = "index.html"
ASSETS_PREFIX = "console"

#: The asset types the console has; a file of any other type is not served.
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_TYPE = "text/html; charset=utf-8"
#: versioned names never change content
ASSET_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: str
    content_type: str


@cache
def assets() -> dict[str, Asset]:
    """Every servable asset by file name (the folder is flat: a name is never a path)."""
    found: dict[str, Asset] = {}
    for path in sorted(CONSOLE_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            found[path.name] = Asset(path.read_text(encoding="utf-8"), content_type)
    return found


@cache
def version() -> str:
    """A digest of every asset and the page: what the assets' URLs are named by."""
    digest = hashlib.sha256()
    for name, asset in assets().items():
        digest.update(name.encode() + b"\0" + asset.body.encode() + b"\0")
    digest.update((CONSOLE_DIR / PAGE).read_bytes())
    return digest.hexdigest()[:12]


def asset(requested_version: str, name: str) -> Asset | None:
    """The asset, only under the current version (an old page's asset is gone, not stale)."""
    if requested_version != version():
        return None
    return assets().get(name)


def assets_path() -> str:
    """Where the assets are, relative to the API's root."""
    return f"{ASSETS_PREFIX}/{version()}/"


def api_root(request_path: str | None, route: str = "/") -> str:
    """The API's root as the browser sees it, from API Gateway's ``requestContext.path``.

    That path is the route's, behind whatever prefix the client used: ``/api``
    behind a stage, a base path behind a custom domain, nothing locally. The
    root ends with a slash, which is what makes relative URLs resolve under it
    (``/api`` and ``/api/`` both reach the page).
    """
    path = request_path or route
    if route != "/" and path.endswith(route):
        path = path[: -len(route)]
    if not path.startswith("/"):
        path = "/" + path
    return path if path.endswith("/") else path + "/"


@cache
def _page_template() -> str:
    return (CONSOLE_DIR / PAGE).read_text(encoding="utf-8")


def page(request_path: str | None) -> str:
    """The console's HTML with its base and assets' version filled in."""
    return (
        _page_template()
        .replace("{{base}}", html.escape(api_root(request_path), quote=True))
        .replace("{{assets}}", html.escape(assets_path(), quote=True))
    )


def page_policy(cognito_endpoint: str) -> str:
    """The page's Content-Security-Policy: its own scripts and styles, and Cognito.

    No inline script or style, nothing from a third party; the only other
    origin the page talks to is Cognito's endpoint (sign-in and refresh).
    Presigned URLs are navigated to, which a policy does not govern.
    """
    parts = urlsplit(cognito_endpoint)
    cognito = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src 'self' {cognito}".rstrip(),
        "manifest-src 'self'",
        "base-uri 'self'",
        "form-action 'none'",  # a form that JS did not take never posts a password anywhere
        "frame-ancestors 'none'",
    ])


#: Every other response (JSON, redirects, assets): nothing to run, nothing to frame.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": API_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
