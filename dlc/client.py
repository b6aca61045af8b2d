"""A small, typed client of the Download Center API, for the CLI and for other programs.

    from dlc import Client
    client = Client.from_config()              # the API and sign-in `dlc login` stored
    task = client.create("demo", params={"rows": 1000}, task_name="Users")
    task = client.wait(task["id"])
    result = client.download(task["id"], "exports/")   # resumable, md5 + sha256 verified

A single file built in segments has no md5 or sha256 of the whole, but ``ranges``: its byte
ranges, each with its own; :meth:`Client.download` checks every range of the saved file
(:func:`check_ranges`, a few threads side by side).

A task built in parts (``output: "parts"``) has no one file: :meth:`Client.download`
saves each of its files and its ``manifest.json`` into a folder, each verified.

Every failure is a :class:`dlc.errors.DlcError` carrying the API's ``code``
and ``message``. Tasks are the API's JSON objects (``dict``), unchanged, so a
field the server adds later reaches the caller without a client release.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from dlc.config import TokenStore, check_secure, normalize_api_url, resolve_api_url
from dlc.errors import (
    ApiError,
    AuthError,
    ChecksumMismatch,
    DlcError,
    NotFound,
    UsageError,
    error_for,
)

Task = dict[str, Any]

#: Statuses a task does not leave by itself (``retry`` queues a failed or canceled one again).
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
#: Refresh a little before the ID token expires, so a request never carries one that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
PART_SUFFIX = ".dlc-part"
CHUNK_SIZE = 256 * 1024
#: what one read of a range being verified takes (hashlib lets other threads run while it hashes)
HASH_BLOCK = 1024 * 1024
#: threads that verify a file's ranges side by side (at most one a range, and one a CPU)
RANGE_WORKERS = 4
#: mismatched ranges an error message names one by one (its details list them all)
RANGES_NAMED = 3
#: how often a broken download stream is picked up again within one call
STREAM_RETRIES = 3
#: polls in a row that may fail (no connection, a 5xx) before a wait gives up
WAIT_RETRIES = 5
#: a part's name: ``<stem>-00001-of-00008<suffixes>`` (the server's ``part_name``)
PART_NAME = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}(?:\.[^/]*)?$")
COGNITO_TARGET = "AWSCognitoIdentityProviderService.InitiateAuth"
REVOKE_TARGET = "AWSCognitoIdentityProviderService.RevokeToken"
#: Cognito's exceptions that mean "these credentials do not sign in" (exit 3, not a crash)
COGNITO_AUTH_ERRORS = {
    "NotAuthorizedException", "UserNotFoundException", "UserNotConfirmedException",
    "PasswordResetRequiredException", "InvalidParameterException",
}


def _version() -> str:
    from dlc import __version__

    return __version__


def _jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: only to read who and until when (the API verifies it)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass
class Tokens:
    """One sign-in: the ID token the API takes, and what renews it."""

    id_token: str
    refresh_token: str | None
    expires_at: float
    username: str
    client_id: str
    cognito_endpoint: str
    access_token: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tokens:
        return cls(
            id_token=str(data["id_token"]),
            refresh_token=data.get("refresh_token") or None,
            expires_at=float(data.get("expires_at") or 0),
            username=str(data.get("username") or ""),
            client_id=str(data.get("client_id") or ""),
            cognito_endpoint=str(data.get("cognito_endpoint") or ""),
            access_token=data.get("access_token") or None,
        )

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at - REFRESH_MARGIN_SECONDS


@dataclass
class Page:
    """One page of ``GET /downloads``: follow ``next_cursor`` until it is None."""

    items: list[Task]
    next_cursor: str | None


@dataclass
class DownloadResult:
    """A saved, verified file."""

    path: Path
    size: int
    #: the saved file's md5 and sha256; None for a file verified by its ranges only (one built in
    #: segments, whose task has no checksum of the whole to compare them with)
    md5: str | None
    sha256: str | None
    #: the byte a previous, interrupted download was picked up from (0: downloaded whole)
    resumed_from: int
    #: which of the task's checksums the file was checked against (``"ranges"``: each range's)
    verified: list[str] = field(default_factory=list)
    #: how many of the task's ``ranges`` matched, each by its md5 and sha256 (0: no ranges)
    ranges: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


@dataclass
class PartsResult:
    """A task in parts, saved: a folder with each file and the manifest, every one verified."""

    path: Path
    files: list[DownloadResult]
    manifest: DownloadResult
    #: the files' sizes added up (the task's ``size``; the manifest not counted)
    size: int
    #: files that were already there, whole and matching, and were not downloaded again
    kept: list[str] = field(default_factory=list)
    #: what was checked: each file's md5 and sha256, and the manifest's list against them
    verified: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "files": [f.to_json() for f in self.files],
                "manifest": self.manifest.to_json(), "kept": list(self.kept), "verified": list(self.verified)}


ProgressCallback = Callable[[int, int], None]
FileCallback = Callable[[str, int, int], None]


class Client:
    """The Download Center API: sign-in, the task calls, waiting, and verified downloads.

    Give it an ``api_url`` and either a bare ID ``token`` (used as it is), or
    ``tokens`` from :meth:`login`, or a :class:`~dlc.config.TokenStore` to load
    the sign-in from and save refreshed tokens to. A request made with an ID
    token about to expire refreshes it first (Cognito ``REFRESH_TOKEN_AUTH``),
    and one the API answers ``401`` is refreshed and sent once more.
    """

    def __init__(self, api_url: str, *, token: str | None = None, tokens: Tokens | None = None,
                 store: TokenStore | None = None, session: requests.Session | None = None,
                 timeout: float = 60.0) -> None:
        self.api_url = normalize_api_url(api_url)
        self.store = store
        self.token = token
        if tokens is None and token is None and store is not None:
            entry = store.get(self.api_url)
            if entry is not None:
                with suppress(KeyError, TypeError, ValueError):
                    tokens = Tokens.from_json(entry)
        self.tokens = tokens
        self.timeout = timeout
        self.http = session or requests.Session()
        self.http.headers.setdefault("User-Agent", f"dlc/{_version()}")

    @classmethod
    def from_config(cls, api_url: str | None = None, *, store: TokenStore | None = None,
                    **kwargs: Any) -> Client:
        """The API ``dlc`` would talk to (``api_url``, ``DLC_API_URL``, the local stack...), signed in."""
        store = store or TokenStore()
        url, _source = resolve_api_url(api_url, store)
        return cls(url, store=store, **kwargs)

    # -- HTTP ------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.http.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise ApiError("unreachable", f"cannot reach {url}: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    def _raise_for(resp: requests.Response) -> None:
        """The API's error envelope as a typed error (a body that is not one still gets a code)."""
        code, message, details = f"http_{resp.status_code}", resp.reason or "request failed", None
        with suppress(ValueError):
            body = resp.json()
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                code = str(error.get("code") or code)
                message = str(error.get("message") or message)
                details = error.get("details")
        raise error_for(resp.status_code, code, message, details)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: Any = None, headers: Mapping[str, str] | None = None,
                allow_redirects: bool = True,
                ok: tuple[int, ...] = (200, 201, 202, 204)) -> requests.Response:
        """One authenticated call; any status outside ``ok`` raises the API's error."""
        url = f"{self.api_url}{path}"
        for attempt in (1, 2):
            all_headers = {"Authorization": self._authorization(), **(headers or {})}
            resp = self._send(method, url, params=params, json=json_body, headers=all_headers,
                              allow_redirects=allow_redirects)
            if resp.status_code == 401 and attempt == 1 and self._can_refresh():
                self.refresh()
                continue
            if resp.status_code not in ok:
                self._raise_for(resp)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError("bad_response", f"{method} {path} did not answer JSON") from exc

    # -- sign-in ---------------------------------------------------------------------------------

    def sign_in_config(self) -> dict[str, Any]:
        """Where this API's users sign in (``GET /console/config.json``, no token needed)."""
        resp = self._send("GET", f"{self.api_url}/console/config.json")
        if resp.status_code != 200:
            self._raise_for(resp)
        try:
            config = resp.json()
        except ValueError:
            config = None
        if not isinstance(config, dict) or not config.get("client_id") or not config.get("cognito_endpoint") \
                or not isinstance(config["cognito_endpoint"], str):
            raise ApiError("no_sign_in_config",
                           f"{self.api_url} does not say where to sign in (GET /console/config.json)")
        # the password goes there: over https, or to this machine (the local stack's moto)
        check_secure(config["cognito_endpoint"], "the Cognito endpoint",
                     f"{self.api_url}/console/config.json")
        return config

    def _cognito(self, endpoint: str, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One call of Cognito's JSON API as a plain POST (no AWS credentials: the app client is
        public); its answer, or its refusal as a typed error (an AuthError for a sign-in refused)."""
        check_secure(endpoint, "the Cognito endpoint")
        resp = self._send("POST", endpoint, data=json.dumps(payload),
                          headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
        try:
            body = resp.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if resp.status_code != 200:
            kind = str(body.get("__type") or body.get("code") or f"http_{resp.status_code}").split("#")[-1]
            message = str(body.get("message") or body.get("Message") or resp.reason or "Cognito refused")
            code = _snake(kind.removesuffix("Exception"))
            if kind in COGNITO_AUTH_ERRORS or resp.status_code in (400, 401, 403):
                raise AuthError(code, message, status=resp.status_code)
            raise ApiError(code, message, status=resp.status_code)
        return body

    def _initiate_auth(self, endpoint: str, client_id: str, flow: str,
                       parameters: dict[str, str]) -> dict[str, Any]:
        """Cognito's InitiateAuth: the tokens of a sign-in or a refresh."""
        body = self._cognito(endpoint, COGNITO_TARGET,
                             {"AuthFlow": flow, "ClientId": client_id, "AuthParameters": parameters})
        if body.get("ChallengeName"):
            raise AuthError("challenge_required",
                            f"Cognito asks for {body['ChallengeName']}, which dlc cannot answer: "
                            "sign in once in the web console, then try again")
        result = body.get("AuthenticationResult")
        if not isinstance(result, dict) or not result.get("IdToken"):
            raise ApiError("bad_response", "Cognito answered without tokens")
        return result

    def login(self, username: str, password: str, *, config: Mapping[str, Any] | None = None) -> Tokens:
        """Sign in with USER_PASSWORD_AUTH where the API says; keep (and store) the tokens.

        ``config``: what :meth:`sign_in_config` answered, when the caller has already shown it
        to the person before asking for the password (``dlc login`` does).
        """
        config = config or self.sign_in_config()
        endpoint, client_id = str(config["cognito_endpoint"]), str(config["client_id"])
        result = self._initiate_auth(endpoint, client_id, "USER_PASSWORD_AUTH",
                                     {"USERNAME": username, "PASSWORD": password})
        claims = _jwt_claims(result["IdToken"])
        self.tokens = Tokens(
            id_token=result["IdToken"],
            refresh_token=result.get("RefreshToken"),
            expires_at=time.time() + float(result.get("ExpiresIn") or 3600),
            username=str(claims.get("cognito:username") or username),
            client_id=client_id,
            cognito_endpoint=endpoint,
            access_token=result.get("AccessToken"),
        )
        self.token = None
        self._save()
        return self.tokens

    def _can_refresh(self) -> bool:
        return self.token is None and self.tokens is not None and bool(self.tokens.refresh_token)

    def refresh(self) -> Tokens:
        """New ID and access tokens from the refresh token (Cognito keeps the refresh token)."""
        if self.tokens is None or not self.tokens.refresh_token:
            raise AuthError("not_logged_in", f"not signed in to {self.api_url}: run `dlc login`")
        try:
            result = self._initiate_auth(self.tokens.cognito_endpoint, self.tokens.client_id,
                                         "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": self.tokens.refresh_token})
        except AuthError as exc:
            raise AuthError("session_expired",
                            f"the sign-in to {self.api_url} has expired ({exc.message}): run `dlc login`",
                            status=exc.status) from exc
        self.tokens.id_token = result["IdToken"]
        self.tokens.access_token = result.get("AccessToken") or self.tokens.access_token
        self.tokens.refresh_token = result.get("RefreshToken") or self.tokens.refresh_token
        self.tokens.expires_at = time.time() + float(result.get("ExpiresIn") or 3600)
        self._save()
        return self.tokens

    def revoke(self) -> bool:
        """Revoke this sign-in's refresh token at Cognito (``RevokeToken``); False when there is none.

        Deleting the tokens here is not enough: a copy of the refresh token (a stolen laptop's
        backup, a leaked file) would sign in for as long as it lives, 30 days by default.
        Revoked, Cognito refuses it (and the access tokens it issued); an ID token already
        issued stays valid until it expires (an hour), as it is checked by its signature only.
        """
        tokens = self.tokens
        if tokens is None or not tokens.refresh_token:
            return False
        self._cognito(tokens.cognito_endpoint, REVOKE_TARGET,
                      {"Token": tokens.refresh_token, "ClientId": tokens.client_id})
        return True

    def logout(self) -> bool:
        """Revoke the refresh token, then forget this API's tokens; True when there were some.

        The tokens are forgotten here even when Cognito cannot revoke the refresh token; then
        :class:`ApiError` ``not_revoked`` says so (the token stays valid until it expires).
        """
        tokens = self.tokens
        try:
            self.revoke()
        except DlcError as exc:
            failure: DlcError | None = exc
        else:
            failure = None
        finally:
            self.tokens, self.token = None, None
            removed = self.store.remove(self.api_url) if self.store is not None else tokens is not None
        if failure is not None and tokens is not None:
            raise ApiError("not_revoked",
                           f"the tokens for {self.api_url} are deleted here, but Cognito at "
                           f"{tokens.cognito_endpoint} did not revoke the refresh token ({failure.code}: "
                           f"{failure.message}): a copy of it signs in until it expires. Sign in and out "
                           "again when Cognito can be reached, or ask an administrator to sign you out "
                           "everywhere (AdminUserGlobalSignOut)",
                           details={"api_url": self.api_url, "signed_out": removed, "revoked": False})
        return removed

    def _save(self) -> None:
        if self.store is not None and self.tokens is not None:
            self.store.put(self.api_url, self.tokens.to_json())

    def _authorization(self) -> str:
        if self.token:
            return self.token
        if self.tokens is None:
            raise AuthError("not_logged_in", f"not signed in to {self.api_url}: run `dlc login`")
        if self.tokens.expired() and self.tokens.refresh_token:
            self.refresh()
        return self.tokens.id_token

    # -- the API's calls ---------------------------------------------------------------------------

    def kinds(self) -> list[dict[str, Any]]:
        """The kinds this caller may export, each with its formats and ``params_schema``."""
        return list(self._json("GET", "/kinds").get("items", []))

    def kind(self, name: str) -> dict[str, Any]:
        """One kind of :meth:`kinds`; ``UsageError unknown_kind`` naming the others when absent."""
        kinds = self.kinds()
        for entry in kinds:
            if entry.get("kind") == name:
                return entry
        names = ", ".join(str(k.get("kind")) for k in kinds) or "none"
        raise UsageError("unknown_kind", f"there is no kind {name!r} for you here; the kinds are: {names}")

    def list(self, *, status: str | list[str] | None = None, kind: str | None = None,
             task_name: str | None = None, file_name: str | None = None,
             created_after: str | None = None, created_before: str | None = None,
             limit: int | None = None, cursor: str | None = None) -> Page:
        """One page of the caller's tasks, newest first."""
        if isinstance(status, list):
            status = ",".join(status)
        params = {k: v for k, v in {
            "status": status, "kind": kind, "task_name": task_name, "file_name": file_name,
            "created_after": created_after, "created_before": created_before,
            "limit": None if limit is None else str(limit), "cursor": cursor,
        }.items() if v not in (None, "")}
        body = self._json("GET", "/downloads", params=params)
        return Page(items=list(body.get("items", [])), next_cursor=body.get("next_cursor"))

    def iter_all(self, **filters: Any) -> Iterator[Task]:
        """Every task the filters select, following ``next_cursor`` to the end."""
        cursor: str | None = None
        while True:
            page = self.list(cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get(self, task_id: str) -> Task:
        return self._json("GET", f"/downloads/{_segment(task_id)}")

    def create(self, kind: str, *, params: Mapping[str, Any] | None = None, task_name: str | None = None,
               format: str | None = None, file_name: str | None = None,
               idempotency_key: str | None = None, parallelism: int | str | None = None,
               output: str | None = None) -> Task:
        """Ask for an export; the queued task at once (the first one again for a replayed key).

        ``parallelism`` (1 to 32, or "auto") and ``output`` ("single" or "parts") ask for a
        segmented build; left None they are not sent, and the API's defaults (auto, single) apply.
        """
        body: dict[str, Any] = {"task_name": task_name or kind, "kind": kind}
        if format:
            body["format"] = format
        if file_name:
            body["file_name"] = file_name
        if parallelism is not None:
            body["parallelism"] = parallelism
        if output is not None:
            body["output"] = output
        if params is not None:
            body["params"] = dict(params)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/downloads", json_body=body, headers=headers)

    def cancel(self, task_id: str) -> Task:
        return self._json("POST", f"/downloads/{_segment(task_id)}/cancel")

    def retry(self, task_id: str) -> Task:
        return self._json("POST", f"/downloads/{_segment(task_id)}/retry")

    def rename(self, task_id: str, task_name: str) -> Task:
        return self._json("PATCH", f"/downloads/{_segment(task_id)}", json_body={"task_name": task_name})

    def delete(self, task_id: str) -> None:
        self._json("DELETE", f"/downloads/{_segment(task_id)}")

    def file_url(self, task_id: str) -> str:
        """A fresh presigned URL of a succeeded task's file (the API's 409/410 otherwise)."""
        resp = self.request("GET", f"/downloads/{_segment(task_id)}/file", allow_redirects=False, ok=(302,))
        location = resp.headers.get("Location")
        if not location:
            raise ApiError("bad_response", "GET /downloads/{id}/file answered without a Location")
        return location

    def wait(self, task_id: str, *, on_update: Callable[[Task], None] | None = None,
             interval: float = 0.5, max_interval: float = 2.0, timeout: float | None = None) -> Task:
        """Poll the task until it is succeeded, failed, canceled or expired; its last state.

        The poll interval grows from ``interval`` to ``max_interval`` (the
        server updates progress every couple of seconds); a few failed polls in
        a row (no connection, a 5xx) are waited out. ``timeout`` (s)
        raises ``ApiError wait_timeout``; a Ctrl-C raises KeyboardInterrupt
        and leaves the task alone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        blips = 0
        while True:
            try:
                task = self.get(task_id)
            except ApiError as exc:
                # a long wait outlives a dropped connection or a 5xx: only a run of them ends it
                transient = exc.code == "unreachable" or (exc.status or 0) >= 500
                blips += 1
                if not transient or blips > WAIT_RETRIES:
                    raise
                time.sleep(min(max_interval * blips, 10.0))
                continue
            blips = 0
            if on_update is not None:
                on_update(task)
            if task.get("status") in TERMINAL:
                return task
            if deadline is not None and time.monotonic() + delay > deadline:
                raise ApiError("wait_timeout", f"task {task_id} is still {task.get('status')}")
            time.sleep(delay)
            delay = min(max_interval, delay * 1.5)

    # -- downloads -------------------------------------------------------------------------------

    def download(self, task: str | Task, dest: str | os.PathLike[str] | None = None, *, force: bool = False,
                 on_start: ProgressCallback | None = None, on_progress: ProgressCallback | None = None,
                 limit_rate: int | None = None, on_file: FileCallback | None = None,
                 ) -> DownloadResult | PartsResult:
        """Save a succeeded task's file, resuming a partial download, then verify md5 and sha256.

        A file built in segments (the task's ``ranges``, its md5 and sha256 null) is verified
        range by range instead: each range of the saved file must have its md5 and sha256, and
        a mismatch names the range (segment, bytes) and raises :class:`ChecksumMismatch`.

        ``dest``: a file path, or a directory for the task's own ``file_name``
        (the default is the current directory). The bytes go to
        ``.<name>.dlc-part`` beside the target first; a later call picks it up
        with ``Range: bytes=N-`` (a fresh presigned URL when the old one has
        expired), and only verified bytes take the target's name. A checksum
        mismatch deletes the partial file and raises :class:`ChecksumMismatch`.
        An existing target is never overwritten unless ``force``.
        ``on_start(offset, size)`` and ``on_progress(done, size)`` report bytes;
        ``limit_rate`` caps the speed in bytes per second.

        A task in parts is saved by :meth:`download_parts` (``dest`` is then the folder), and
        ``on_file(name, index, count)`` says which of its files comes next.
        """
        task = self._succeeded(task)
        if is_parts(task):
            return self.download_parts(task, dest, force=force, on_file=on_file, on_start=on_start,
                                       on_progress=on_progress, limit_rate=limit_rate)
        task_id = str(task["id"])
        target = target_path(task, dest)
        if target.exists() and not force:
            raise UsageError("file_exists", f"{target} already exists: pass --force to overwrite it")
        expected = {"size": int(task.get("size") or 0), "md5": task.get("md5"), "sha256": task.get("sha256")}
        ranges = file_ranges(task)
        identity: dict[str, Any] = {"task_id": task_id, **expected}
        if ranges:  # a partial file of another build of the task (a retry) is not picked up
            identity["ranges"] = [r["sha256"] or r["md5"] for r in ranges]
        return self._fetch(task.get("url") or self.file_url(task_id), lambda: self.file_url(task_id), target,
                           expected, identity, force=force, on_start=on_start, on_progress=on_progress,
                           limit_rate=limit_rate, what=f"the file of task {task_id}", ranges=ranges)

    def _succeeded(self, task: str | Task) -> Task:
        """The task, read again unless it is known to have succeeded; the API's error if it has not."""
        task = self.get(task) if isinstance(task, str) else task
        task_id = str(task["id"])
        if task.get("status") != "succeeded":
            task = self.get(task_id)
        if task.get("status") != "succeeded":
            # the API's own words: 409 invalid_state (not built yet), 410 expired
            self.file_url(task_id)
            raise ApiError("invalid_state", f"task {task_id} is {task.get('status')}, not succeeded")
        return task

    def download_parts(self, task: str | Task, dest: str | os.PathLike[str] | None = None, *,
                       force: bool = False, on_file: FileCallback | None = None,
                       on_start: ProgressCallback | None = None, on_progress: ProgressCallback | None = None,
                       limit_rate: int | None = None) -> PartsResult:
        """Save every file of a task in parts, and its ``manifest.json``, into one folder.

        ``dest`` is the folder (created if need be); by default the files' stem in the current
        directory (``export-00001-of-00004.csv`` → ``./export/``). Each file is fetched as
        :meth:`download` fetches one (a partial file, resumed; a fresh URL for an expired one)
        and verified against its own md5 and sha256 from the task. A file already there that
        matches is kept without downloading it again, so a second run after an interruption
        fetches only what is missing; one that does not match is overwritten only with
        ``force``. Last, the manifest's list is checked against the task's files and what was
        saved: a disagreement raises :class:`ChecksumMismatch` (``manifest_mismatch``).
        """
        task = self._succeeded(task)
        task_id = str(task["id"])
        if not is_parts(task):
            raise UsageError("not_parts", f"task {task_id} is one file: use download()")
        folder = parts_folder(task, dest)
        folder.mkdir(parents=True, exist_ok=True)
        entries = [*task["files"], task.get("manifest")]
        if entries[-1] is None:
            raise ApiError("bad_response", f"task {task_id} has files but no manifest")
        results: list[DownloadResult] = []
        kept: list[str] = []
        for index, entry in enumerate(entries, 1):
            name = _safe_name(str(entry.get("name") or ""), task_id)
            if on_file is not None:
                on_file(name, index, len(entries))
            target = folder / name
            expected = {"size": int(entry.get("size") or 0), "md5": entry.get("md5"),
                        "sha256": entry.get("sha256")}
            if target.exists():
                found = _whole_file(target, expected)
                if found is not None:
                    kept.append(name)
                    results.append(found)
                    continue
                if not force:
                    raise UsageError("file_exists", f"{target} already exists and is not this task's "
                                     f"{name}: pass --force to overwrite it (or -o another folder)")

            def fresh(name: str = str(entry.get("name"))) -> str:
                return _entry_url(self.get(task_id), name)

            results.append(self._fetch(
                entry.get("url") or fresh(), fresh, target, expected,
                {"task_id": task_id, "name": name, **expected}, force=force, on_start=on_start,
                on_progress=on_progress, limit_rate=limit_rate, what=f"{name} of task {task_id}"))
        files, manifest = results[:-1], results[-1]
        _check_manifest(task, manifest.path, files)
        return PartsResult(path=folder, files=files, manifest=manifest, size=sum(f.size for f in files),
                           kept=kept, verified=["md5", "sha256", "manifest"])

    def _fetch(self, url: str, fresh_url: Callable[[], str], target: Path, expected: dict[str, Any],
               identity: dict[str, Any], *, force: bool, on_start: ProgressCallback | None,
               on_progress: ProgressCallback | None, limit_rate: int | None, what: str,
               ranges: list[dict[str, Any]] | None = None) -> DownloadResult:
        """One file to ``target``: through its partial file, resumed, then verified (see download).

        With ``ranges`` and no checksum of the whole in ``expected``, the whole is not hashed
        as the bytes come: the ranges are, side by side, once they are all there.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        size = int(expected["size"])
        part = part_path(target)
        marker = part.with_name(part.name + ".json")
        whole = not ranges or bool(expected.get("md5") or expected.get("sha256"))

        offset = 0
        if part.exists() and _read_json(marker) == identity and part.stat().st_size <= size:
            offset = part.stat().st_size
        else:
            part.write_bytes(b"")
            marker.write_text(json.dumps(identity), encoding="utf-8")
        resumed_from = offset
        md5, sha256 = _hashers(whole)
        if whole:
            with open(part, "rb") as fh:
                for block in iter(lambda: fh.read(1024 * 1024), b""):
                    md5.update(block)
                    sha256.update(block)
        if on_start is not None:
            on_start(offset, size)

        fresh_urls = stream_retries = 0
        while offset < size:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                resp = self.http.get(url, headers=headers, stream=True, timeout=self.timeout)
            except requests.RequestException as exc:
                stream_retries += 1
                if stream_retries > STREAM_RETRIES:
                    raise ApiError("unreachable", f"cannot download {what}: {exc}") from exc
                continue
            with resp:
                if resp.status_code in (400, 401, 403):
                    # a presigned URL past its expiry: S3 answers 403 (AccessDenied, "Request has expired")
                    fresh_urls += 1
                    if fresh_urls > 2:
                        raise ApiError("url_refused",
                                       f"the URL of {what} is refused ({resp.status_code}) even when fresh",
                                       status=resp.status_code)
                    url = fresh_url()
                    continue
                if resp.status_code == 416 or (resp.status_code == 200 and offset):
                    # the range was not honoured: start over from the first byte
                    offset, resumed_from = 0, 0
                    md5, sha256 = _hashers(whole)
                    part.write_bytes(b"")
                    if resp.status_code == 416:
                        continue
                elif resp.status_code == 206:
                    if _range_start(resp.headers.get("Content-Range")) != offset:
                        raise ApiError("bad_range", f"asked for bytes from {offset}, got "
                                       f"{resp.headers.get('Content-Range')!r}")
                elif resp.status_code == 404:
                    raise NotFound("file_not_found", f"{what} is gone", status=404)
                elif resp.status_code != 200:
                    raise ApiError(f"http_{resp.status_code}", f"downloading {what}: {resp.reason}",
                                   status=resp.status_code)
                before = offset
                try:
                    offset = self._stream(resp, part, offset, size, md5, sha256, on_progress, limit_rate)
                except requests.RequestException as exc:  # the connection broke off: go on from here
                    stream_retries += 1
                    if stream_retries > STREAM_RETRIES:
                        raise ApiError("unreachable", f"the download keeps breaking off: {exc}") from exc
                    offset = part.stat().st_size
                except OSError as exc:  # the disk's (requests' own errors are OSErrors too: caught above)
                    raise DlcError("write_failed", f"cannot write {part}: {exc}") from exc
                if offset == before and offset < size:  # an answer that ended early, with nothing
                    stream_retries += 1
                    if stream_retries > STREAM_RETRIES:
                        raise ApiError("truncated", f"the answers for {what} stop at byte {offset} of {size}")

        got = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
        checked = {name: expected[name] for name in ("md5", "sha256") if expected.get(name)}
        wrong = [name for name, digest in checked.items() if got[name] != digest]
        bad_ranges = check_ranges(part, ranges) if ranges and offset == size else []
        if offset != size or wrong or bad_ranges:
            part.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            details = [f"{name} {got[name]} (the task says {checked[name]})" for name in wrong]
            details += [_range_words(bad, len(ranges or [])) for bad in bad_ranges[:RANGES_NAMED]]
            if len(bad_ranges) > RANGES_NAMED:
                details.append(f"and {len(bad_ranges) - RANGES_NAMED} more of its {len(ranges or [])} ranges")
            detail = "; ".join(details)
            if offset != size:
                detail = f"{offset} bytes (the task says {size})" + (f"; {detail}" if detail else "")
            subject = "the downloaded file" if what.startswith("the file of") else f"the downloaded {what}"
            raise ChecksumMismatch(
                "checksum_mismatch",
                f"{subject} does not match the task: {detail}. The partial file was deleted; "
                f"run the download again to fetch it anew",
                details={"ranges": bad_ranges} if bad_ranges else None,
            )
        if target.exists() and not force:
            raise UsageError("file_exists", f"{target} already exists: pass --force to overwrite it")
        os.replace(part, target)
        marker.unlink(missing_ok=True)
        verified = sorted(checked) + (["ranges"] if ranges else [])
        return DownloadResult(path=target, size=offset, md5=got["md5"], sha256=got["sha256"],
                              resumed_from=resumed_from, verified=verified, ranges=len(ranges or []))

    @staticmethod
    def _stream(resp: requests.Response, part: Path, offset: int, size: int, md5: Any, sha256: Any,
                on_progress: ProgressCallback | None, limit_rate: int | None) -> int:
        """Append the body to the partial file (flushed as it goes, so it survives a Ctrl-C)."""
        chunk_size = CHUNK_SIZE if not limit_rate else max(1024, min(CHUNK_SIZE, limit_rate // 10))
        started, sent = time.monotonic(), 0
        with open(part, "ab") as fh:
            for chunk in resp.iter_content(chunk_size=chunk_size):
                if not chunk:
                    continue
                fh.write(chunk)
                fh.flush()
                md5.update(chunk)
                sha256.update(chunk)
                offset += len(chunk)
                sent += len(chunk)
                if on_progress is not None:
                    on_progress(offset, size)
                if limit_rate:
                    ahead = sent / limit_rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        return offset


class _NoHash:
    """Stands in for a hasher when the whole file is not hashed (it is verified by its ranges)."""

    def update(self, _data: bytes) -> None:
        pass

    def hexdigest(self) -> None:
        return None


def _hashers(whole: bool) -> tuple[Any, Any]:
    if not whole:
        return _NoHash(), _NoHash()
    return hashlib.md5(usedforsecurity=False), hashlib.sha256()


def file_ranges(task: Task) -> list[dict[str, Any]]:
    """A single file built in segments: its ``ranges`` as the API gives them, checked to cover
    the file (in order, contiguous from byte 0 to the task's ``size``, each with a checksum);
    ``[]`` for any other file. A list that does not is the API's mistake (``bad_response``).
    """
    ranges = task.get("ranges")
    if not ranges:
        return []
    task_id, size = task.get("id"), int(task.get("size") or 0)
    out, at = [], 0
    for index, entry in enumerate(ranges, 1):
        try:
            start, length = int(entry["start"]), int(entry["size"])
            item = {"segment": int(entry.get("segment") or index), "start": start, "size": length,
                    "rows": entry.get("rows"), "md5": entry.get("md5") or None,
                    "sha256": entry.get("sha256") or None}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ApiError("bad_response",
                           f"task {task_id}: range {index} is not a byte range: {entry!r}") from exc
        if start != at or length < 0:
            raise ApiError("bad_response", f"task {task_id}: range {index} starts at byte {start} with "
                           f"{length} bytes, where byte {at} was next: its ranges do not follow each other")
        if not item["md5"] and not item["sha256"]:
            raise ApiError("bad_response", f"task {task_id}: range {index} has no checksum")
        out.append(item)
        at = start + length
    if at != size:
        raise ApiError("bad_response", f"task {task_id}: its ranges add up to {at} bytes, "
                       f"the task's size is {size}")
    return out


def _hash_range(fd: int, start: int, size: int) -> tuple[str, str]:
    """md5 and sha256 of ``size`` bytes from ``start`` of an open file (pread: no shared offset)."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    done = 0
    while done < size:
        block = os.pread(fd, min(HASH_BLOCK, size - done), start + done)
        if not block:
            break  # the file is shorter than the range: its digests will not match
        md5.update(block)
        sha256.update(block)
        done += len(block)
    return md5.hexdigest(), sha256.hexdigest()


def check_ranges(path: str | os.PathLike[str], ranges: Sequence[Mapping[str, Any]],
                 workers: int | None = None) -> list[dict[str, Any]]:
    """The ranges of the file at ``path`` whose md5 or sha256 is not the one given; [] if all match.

    ``ranges`` are a task's (``[{"segment", "start", "size", "md5", "sha256"}]``). They are hashed
    side by side by up to ``workers`` threads (default: :data:`RANGE_WORKERS`, at most one a CPU):
    hashlib releases the GIL while it hashes. Each mismatch is the range with its ``index``
    (1-based, in file order) and what the file has there (``got_md5``, ``got_sha256``).
    """
    if not ranges:
        return []
    count = max(1, min(len(ranges), workers or RANGE_WORKERS, os.cpu_count() or 1))
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="dlc-range") as pool:
            digests = list(pool.map(lambda r: _hash_range(fd, int(r["start"]), int(r["size"])), ranges))
    finally:
        os.close(fd)
    bad = []
    for index, (entry, (md5, sha256)) in enumerate(zip(ranges, digests, strict=True), 1):
        if (entry.get("md5") and entry["md5"] != md5) or (entry.get("sha256") and entry["sha256"] != sha256):
            bad.append({"index": index, "segment": entry.get("segment"), "start": int(entry["start"]),
                        "size": int(entry["size"]), "md5": entry.get("md5"), "sha256": entry.get("sha256"),
                        "got_md5": md5, "got_sha256": sha256})
    return bad


def _range_words(bad: Mapping[str, Any], count: int) -> str:
    """'range 2 of 3 (segment 2, bytes 1000-1999): sha256 … (the task says …)'."""
    start, size = bad["start"], bad["size"]
    where = f"bytes {start}-{start + size - 1}" if size else f"no bytes, at {start}"
    wrong = [f"{name} {bad['got_' + name]} (the task says {bad[name]})"
             for name in ("md5", "sha256") if bad.get(name) and bad[name] != bad["got_" + name]]
    return f"range {bad['index']} of {count} (segment {bad['segment']}, {where}): {', '.join(wrong)}"


def is_parts(task: Task) -> bool:
    """Whether a task is a set of files (built as parts) rather than one file."""
    return bool(task.get("files"))


def parts_stem(task: Task) -> str:
    """The parts' common stem (``export-00001-of-00004.csv.gz`` → ``export``): their folder's name."""
    files = task.get("files") or []
    match = PART_NAME.match(Path(str(files[0].get("name") or "")).name) if files else None
    stem = match.group("stem") if match else Path(str(task.get("file_name") or "")).name.split(".")[0]
    return stem if stem not in ("", ".", "..") else str(task["id"])


def parts_folder(task: Task, dest: str | os.PathLike[str] | None) -> Path:
    """Where a task's parts go: ``dest`` itself, else the parts' stem in the current directory."""
    if dest is None:
        return Path.cwd() / parts_stem(task)
    return Path(dest).expanduser().absolute()


def _safe_name(name: str, task_id: str) -> str:
    """A file name from the API as one name in the folder: never a path that leaves it."""
    base = Path(name).name
    if base in ("", ".", "..") or base != name:
        raise ApiError("bad_response", f"task {task_id} names a file {name!r}, which is not a file name")
    return base


def _entry_url(task: Task, name: str) -> str:
    """The fresh URL of one of a task's files (or its manifest), by name."""
    for entry in [*(task.get("files") or []), task.get("manifest") or {}]:
        if entry.get("name") == name and entry.get("url"):
            return str(entry["url"])
    raise NotFound("file_not_found", f"task {task.get('id')} no longer offers {name} "
                   f"(it is {task.get('status')})", status=410)


def _digests(path: Path) -> tuple[int, str, str]:
    md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return size, md5.hexdigest(), sha256.hexdigest()


def _whole_file(path: Path, expected: Mapping[str, Any]) -> DownloadResult | None:
    """A file already saved that is exactly the expected one (size, md5, sha256), else None."""
    if not path.is_file() or path.stat().st_size != expected["size"]:
        return None
    size, md5, sha256 = _digests(path)
    if md5 != expected.get("md5") or sha256 != expected.get("sha256"):
        return None
    return DownloadResult(path=path, size=size, md5=md5, sha256=sha256, resumed_from=size,
                          verified=["md5", "sha256"])


def _check_manifest(task: Task, path: Path, files: list[DownloadResult]) -> None:
    """The saved manifest lists exactly the task's files, with the checksums of what was saved."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        listed = [(str(f["name"]), int(f["size"]), str(f["md5"]), str(f["sha256"])) for f in doc["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChecksumMismatch("manifest_mismatch", f"{path} is not a manifest of files: {exc}") from exc
    saved = [(f.path.name, f.size, f.md5, f.sha256) for f in files]
    problems = []
    if doc.get("task_id") != task.get("id"):
        problems.append(f"it is the manifest of task {doc.get('task_id')!r}, not {task.get('id')}")
    for name, size, md5, sha256 in listed:
        match = next((s for s in saved if s[0] == name), None)
        if match is None:
            problems.append(f"it lists {name}, which the task does not have")
        elif match != (name, size, md5, sha256):
            problems.append(f"{name}: the manifest says {size} bytes, md5 {md5}, sha256 {sha256}; "
                            f"the file saved has {match[1]} bytes, md5 {match[2]}, sha256 {match[3]}")
    for name, *_ in saved:
        if name not in [entry[0] for entry in listed]:
            problems.append(f"it does not list {name}")
    if problems:
        raise ChecksumMismatch("manifest_mismatch", f"{path.name} does not match the files: "
                               + "; ".join(problems))


def target_path(task: Task, dest: str | os.PathLike[str] | None) -> Path:
    """Where a task's file goes: ``dest`` itself, or the task's own name inside a directory."""
    name = Path(str(task.get("file_name") or "")).name
    if name in ("", ".", ".."):
        name = f"{task['id']}.{task.get('format') or 'bin'}"
    if dest is None:
        return Path.cwd() / name
    path = Path(dest).expanduser().absolute()
    if path.is_dir() or str(dest).endswith(("/", os.sep)):
        return path / name
    return path


def part_path(target: Path) -> Path:
    """The partial file beside ``target`` (hidden, so it is not mistaken for the file)."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def _segment(task_id: str) -> str:
    """A task id as one path segment (an id with a slash must not reach another route)."""
    if not task_id:
        raise UsageError("invalid_id", "a task id is empty")
    return quote(task_id, safe="")


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
