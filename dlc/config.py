"""Where ``dlc`` talks to and where it keeps its sign-ins.

Tokens live in the user's config directory (``$DLC_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/dlc``, else ``~/.config/dlc``) in ``tokens.json``, readable
by the user only (0600, in a 0700 directory) because a refresh token signs in
for weeks. They are keyed by API URL, so one person can be signed in to the
local stack and a deployment at once without one's token going to the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def normalize_api_url(url: str) -> str:
    """One spelling per API (no trailing slash), so the token store finds a sign-in again."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise UsageError("invalid_api_url", f"{url!r} is not an http(s) URL")
    return url.rstrip("/")


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
        except (OSError, ValueError):
            url = None
        if isinstance(url, str) and url:
            return normalize_api_url(url), str(stack_file)
    last = (store or TokenStore()).last_api_url()
    if last:
        return normalize_api_url(last), "the last dlc login"
    raise UsageError(
        "no_api_url",
        "no API to talk to: pass --api-url URL or set DLC_API_URL "
        "(or start the local stack with `make run`)",
    )
