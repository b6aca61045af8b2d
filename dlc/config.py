"""Where ``dlc`` talks to and where it keeps its sign-ins.

Tokens live in the user's config directory (``$DLC_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/dlc``, else ``~/.config/dlc``) in ``tokens.json``, readable
by the user only (0600, in a 0700 directory) because a refresh token signs in
for weeks. They are keyed by API URL, so one person can be signed in to the
local stack and a deployment at once without one's token going to the other.

Whom ``dlc`` trusts with a password and a token (docs/security.md): an
address the user gave (``--api-url``, ``$DLC_API_URL``, the last login), over
``https://``, or plain ``http://`` to this machine only (127.0.0.0/8, ::1,
localhost); and a ``.local/stack.json`` found in the current folder or above
it only when it names this machine, since anyone who can put a file in a
cloned folder could otherwise choose where ``dlc login`` sends the password.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dlc.errors import UsageError

TOKENS_FILE = "tokens.json"
STACK_FILE = Path(".local") / "stack.json"


def config_dir() -> Path:
    """The directory for ``dlc``'s files (not created here)."""
    override = os.environ.get("DLC_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "dlc"


def url_host(url: str) -> str:
    """The host an http(s) URL connects to (``[::1]`` as ``::1``), lower case; '' when it has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # a bracketed host that is no IPv6 address
        return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost``, or an address in 127.0.0.0/8 or ``::1``.

    A name that merely resolves there (``127.0.0.1.example.com``) is not: what matters is
    what the URL says, before any lookup.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secure(url: str, what: str, named_by: str = "") -> str:
    """``url`` if a password or token may travel to it: https, or plain http to this machine.

    ``what`` names it for the error (``"the API"``, ``"the Cognito endpoint"``), ``named_by``
    says who gave it when that was not the user (``"http://127.0.0.1:8000/console/config.json"``).
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    host = url_host(url)
    subject = f"{what} {url}" + (f" (named by {named_by})" if named_by else "")
    if scheme not in ("http", "https") or not host:
        raise UsageError("invalid_url", f"{subject} is not an http(s) URL with a host")
    if scheme == "http" and not is_loopback(host):
        raise UsageError("insecure_url",
                         f"{subject} is plain http:// to {host}, which is not this machine: dlc sends "
                         "passwords and tokens over https:// only (plain http:// only to 127.0.0.1, "
                         "::1 or localhost)")
    return url


def normalize_api_url(url: str) -> str:
    """One spelling per API (no trailing slash), so the token store finds a sign-in again.

    Refused: anything but an http(s) URL, and plain http to another machine (see check_secure).
    """
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise UsageError("invalid_api_url", f"{url!r} is not an http(s) URL")
    return check_secure(url.rstrip("/"), "the API")


class TokenStore:
    """The sign-ins, by API URL, in one JSON file that only the user can read."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / TOKENS_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # a damaged file is as good as none: signing in again rewrites it
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        """Atomically, created 0600 (never briefly readable by others), in a 0700 directory."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, api_url: str) -> dict[str, Any] | None:
        entry = self._read().get("apis", {}).get(api_url)
        return entry if isinstance(entry, dict) else None

    def put(self, api_url: str, entry: dict[str, Any]) -> None:
        data = self._read()
        data.setdefault("apis", {})[api_url] = entry
        data["last_api_url"] = api_url
        self._write(data)

    def remove(self, api_url: str) -> bool:
        data = self._read()
        found = data.get("apis", {}).pop(api_url, None) is not None
        if data.get("last_api_url") == api_url:
            data.pop("last_api_url")
        if found:
            self._write(data)
        return found

    def last_api_url(self) -> str | None:
        url = self._read().get("last_api_url")
        return url if isinstance(url, str) and url else None


def find_stack_file(start: Path | None = None) -> Path | None:
    """The running local stack's description: ``$STACK_FILE``, else ``.local/stack.json`` here or above."""
    override = os.environ.get("STACK_FILE")
    if override:
        path = Path(override).expanduser()
        return path if path.is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STACK_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_api_url(explicit: str | None, store: TokenStore | None = None) -> tuple[str, str]:
    """The API to talk to and where that choice came from (for messages).

    ``--api-url``, else ``DLC_API_URL``, else the running local stack's
    ``.local/stack.json``, else the API of the last ``dlc login``; otherwise
    a usage error that says how to choose.
    """
    if explicit:
        return normalize_api_url(explicit), "--api-url"
    env = os.environ.get("DLC_API_URL")
    if env:
        return normalize_api_url(env), "DLC_API_URL"
    stack_file = find_stack_file()
    if stack_file is not None:
        try:
            url = json.loads(stack_file.read_text(encoding="utf-8")).get("api_url")
        except (OSError, ValueError, AttributeError):
            url = None
        if isinstance(url, str) and url:
            return _stack_api_url(stack_file, url), str(stack_file)
    last = (store or TokenStore()).last_api_url()
    if last:
        return normalize_api_url(last), "the last dlc login"
    raise UsageError(
        "no_api_url",
        "no API to talk to: pass --api-url URL or set DLC_API_URL "
        "(or start the local stack with `make run`)",
    )


def _stack_api_url(stack_file: Path, url: str) -> str:
    """The API a stack file names, if it is on this machine; an error naming the file otherwise.

    The file is found by where the command runs (a cloned folder, or one above it), so it is
    not the user's word: a planted one naming another host would get the password at the next
    ``dlc login``. It is refused, not passed over, so that the user learns of it.
    """
    host = url_host(url.strip())
    if not is_loopback(host):
        raise UsageError(
            "untrusted_stack_file",
            f"{stack_file} names the API {url.strip()}, on {host or 'no host'}, which is not this machine: "
            "dlc takes a stack file's address only for a local stack (127.0.0.1, ::1, localhost). "
            "Delete the file if you did not make it, or say which API to use with --api-url or "
            "DLC_API_URL")
    return normalize_api_url(url)
