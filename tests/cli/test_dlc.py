"""``dlc``, the installed console script, run as a user runs it against a real local stack.

Every test starts the real executable (the one ``pip install -e .`` put beside
this Python) as a subprocess, with its own config directory, and checks what
a person or a script sees: exit codes, stdout, stderr, the files it writes.
A pseudo-terminal stands in for a person's terminal where the progress
display matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import PROJECT_DIR, RunningStack

DLC = Path(sys.executable).parent / "dlc"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _password(stack: RunningStack, username: str) -> str:
    return next(u["password"] for u in stack.info["users"] if u["username"] == username)


def _default_sigint() -> None:
    """A child started from a shell's background job would inherit SIGINT ignored: restore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Dlc:
    """One user's ``dlc``: the executable, the API, and a config directory of its own."""

    api: str
    config: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("STACK_FILE", "DLC_API_URL", "COLUMNS", "LINES", "FORCE_COLOR")}
        env.update({"DLC_CONFIG_DIR": str(self.config), "DLC_API_URL": self.api,
                    "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1", **checkout_path()})
        env.update(extra)
        return env

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DLC), *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(), cwd=cwd or self.workdir,
                              preexec_fn=_default_sigint)

    def ok_json(self, *args: str) -> Any:
        """``dlc ... --json`` that must succeed: its stdout, parsed whole (one document)."""
        result = self.run(*args, "--json")
        assert result.returncode == 0, f"dlc {' '.join(args)}: {result.returncode}\n{result.stderr}"
        return json.loads(result.stdout)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([str(DLC), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env(), cwd=self.workdir, preexec_fn=_default_sigint,
                                **kwargs)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is truthy (its value), or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {what}")
        time.sleep(0.05)


def digests(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def in_terminal(dlc: Dlc, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], str]]]:
    """``dlc`` with stdin, stdout and stderr on a pseudo-terminal of 120 x 30; a reader of the screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([str(DLC), *args], stdin=slave, stdout=slave, stderr=slave,
                            env=dlc.env(TERM="xterm-256color"), cwd=dlc.workdir, preexec_fn=_default_sigint)
    os.close(slave)
    seen = bytearray()

    def screen() -> str:
        """Everything written so far, without the terminal's control sequences."""
        while select.select([master], [], [], 0.05)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen.extend(chunk)
        return ANSI.sub("", seen.decode("utf-8", "replace"))

    try:
        yield proc, screen
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(master)


def exited(proc: subprocess.Popen[bytes], screen: Callable[[], str]) -> bool:
    """Whether the child has exited, reading its terminal meanwhile (a full one would block it)."""
    screen()
    return proc.poll() is not None


# -- fixtures --------------------------------------------------------------------------------------


def checkout_path() -> dict[str, str]:
    """PYTHONPATH for a git worktree of the project: the venv's editable install is the main
    checkout's, so this checkout's ``dlc/`` goes first (in the main checkout it changes nothing)."""
    if Path(sys.prefix).resolve().parent == PROJECT_DIR:  # the checkout's own .venv
        return {"PYTHONPATH": ""}
    return {"PYTHONPATH": str(PROJECT_DIR)}


@pytest.fixture(scope="module")
def installed() -> Path:
    """The console script of this venv, running this checkout's code."""
    if not DLC.exists():
        pytest.fail(f"{DLC} is missing: install the client with `{sys.executable} -m pip install -e "
                    f"{PROJECT_DIR}` (make's venv step does)")
    where = subprocess.run([sys.executable, "-c", "import dlc; print(dlc.__file__)"], cwd="/",
                           capture_output=True, text=True, env={**os.environ, **checkout_path()})
    module = Path(where.stdout.strip()).resolve()
    if where.returncode != 0 or not module.is_relative_to(PROJECT_DIR):
        pytest.fail(f"{DLC} runs {module or where.stderr.strip()}, not this checkout's dlc/: "
                    f"`{sys.executable} -m pip install -e {PROJECT_DIR}`")
    return DLC


def _signed_in(stack: RunningStack, tmp: Path, username: str) -> Dlc:
    user = Dlc(stack.api, tmp / f"config-{username}", tmp / f"work-{username}")
    user.workdir.mkdir()
    result = user.run("login", "--username", username, "--password-stdin",
                      stdin=_password(stack, username) + "\n")
    assert result.returncode == 0, result.stderr
    assert f"as {username}" in result.stdout
    return user


@pytest.fixture(scope="module")
def alice(installed: Path, local_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Dlc:
    return _signed_in(local_stack, tmp_path_factory.mktemp("alice"), "alice")


@pytest.fixture(scope="module")
def bob(installed: Path, local_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Dlc:
    return _signed_in(local_stack, tmp_path_factory.mktemp("bob"), "bob")


@pytest.fixture(scope="module")
def export(alice: Dlc) -> dict[str, Any]:
    """A succeeded demo export of about 2 MB, for the download tests."""
    task = alice.ok_json("create", "demo", "-p", "rows=30000", "--name", "Resumable 用户", "--wait")
    assert task["status"] == "succeeded" and task["size"] > 1_000_000
    return task


# -- sign-in ---------------------------------------------------------------------------------------


def test_login_keeps_the_tokens_for_this_api_readable_by_the_user_only(alice: Dlc) -> None:
    tokens = alice.config / "tokens.json"
    assert tokens.stat().st_mode & 0o777 == 0o600
    assert alice.config.stat().st_mode & 0o777 == 0o700
    data = json.loads(tokens.read_text(encoding="utf-8"))
    entry = data["apis"][alice.api]
    assert entry["username"] == "alice" and entry["id_token"].count(".") == 2 and entry["refresh_token"]
    assert "password" not in json.dumps(data).lower()


def test_an_expired_id_token_is_refreshed_with_the_refresh_token(alice: Dlc, tmp_path: Path) -> None:
    copy = Dlc(alice.api, tmp_path / "config", alice.workdir)
    copy.config.mkdir(mode=0o700)
    data = json.loads((alice.config / "tokens.json").read_text(encoding="utf-8"))
    old = data["apis"][alice.api]["id_token"]
    data["apis"][alice.api]["expires_at"] = 0
    (copy.config / "tokens.json").write_text(json.dumps(data), encoding="utf-8")

    assert isinstance(copy.ok_json("ls")["items"], list)

    entry = json.loads((copy.config / "tokens.json").read_text(encoding="utf-8"))["apis"][alice.api]
    assert entry["id_token"] != old
    assert entry["expires_at"] > time.time() + 600
    assert (copy.config / "tokens.json").stat().st_mode & 0o777 == 0o600


def test_logout_forgets_this_apis_tokens_only(alice: Dlc, local_stack: RunningStack, tmp_path: Path) -> None:
    # a sign-in of its own, not a copy of alice's: logging out revokes the refresh token at Cognito
    copy = _signed_in(local_stack, tmp_path, "alice")
    data = json.loads((copy.config / "tokens.json").read_text(encoding="utf-8"))
    data["apis"]["https://elsewhere.example"] = dict(data["apis"][alice.api])
    (copy.config / "tokens.json").write_text(json.dumps(data), encoding="utf-8")

    result = copy.run("logout")
    assert result.returncode == 0
    assert result.stdout == f"Signed out of {alice.api} (its refresh token revoked)\n"
    left = json.loads((copy.config / "tokens.json").read_text(encoding="utf-8"))["apis"]
    assert list(left) == ["https://elsewhere.example"]
    assert copy.run("ls").returncode == 3
    assert copy.ok_json("logout") == {"api_url": alice.api, "signed_out": False, "revoked": False}


def cognito_of(stack: RunningStack) -> Any:
    import boto3

    return boto3.client("cognito-idp", endpoint_url=stack.info["aws_endpoint_url"],
                        region_name=stack.info["region"], aws_access_key_id="e2e",
                        aws_secret_access_key="e2e")


def test_logout_revokes_the_refresh_token_so_a_copy_of_it_no_longer_signs_in(
        installed: Path, local_stack: RunningStack, tmp_path: Path) -> None:
    """A stolen refresh token kept working for 30 days after `dlc logout` deleted the local copy."""
    user = _signed_in(local_stack, tmp_path, "bob")
    stolen = json.loads((user.config / "tokens.json").read_text(encoding="utf-8"))["apis"][user.api]
    idp = cognito_of(local_stack)

    def refresh() -> dict[str, Any]:
        return idp.initiate_auth(ClientId=stolen["client_id"], AuthFlow="REFRESH_TOKEN_AUTH",
                                 AuthParameters={"REFRESH_TOKEN": stolen["refresh_token"]})

    assert refresh()["AuthenticationResult"]["IdToken"]  # the copy signs in while bob is signed in
    result = user.run("logout", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"api_url": user.api, "signed_out": True, "revoked": True}
    with pytest.raises(idp.exceptions.NotAuthorizedException, match="Refresh Token has been revoked"):
        refresh()


def test_a_logout_cognito_cannot_confirm_still_deletes_the_tokens_and_says_so(
        installed: Path, tmp_path: Path) -> None:
    with scripted_api() as fake:
        user = signed_in_to(fake.api, tmp_path, refresh_token="refresh-token-value")
        result = user.run("logout")
        assert fake.asked == ["POST /cognito"]  # RevokeToken, at the sign-in's Cognito endpoint
    assert result.returncode == 1
    assert result.stderr.startswith(f"not_revoked: the tokens for {fake.api} are deleted here, but Cognito "
                                    f"at {fake.api}/cognito did not revoke the refresh token (http_404: ")
    assert "refresh-token-value" not in result.stderr
    stored = json.loads((user.config / "tokens.json").read_text(encoding="utf-8"))
    assert stored["apis"] == {} and "last_api_url" not in stored


def test_a_wrong_password_exits_3_and_stores_nothing(installed: Path, local_stack: RunningStack,
                                                       tmp_path: Path) -> None:
    user = Dlc(local_stack.api, tmp_path / "config", tmp_path)
    result = user.run("login", "-u", "alice", "--password-stdin", stdin="not-the-password\n")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("not_authorized: ")
    assert "Traceback" not in result.stderr
    assert not (user.config / "tokens.json").exists()


def test_without_a_login_every_call_exits_3(installed: Path, local_stack: RunningStack,
                                            tmp_path: Path) -> None:
    user = Dlc(local_stack.api, tmp_path / "config", tmp_path)
    result = user.run("ls")
    assert result.returncode == 3
    assert result.stderr == f"not_logged_in: not signed in to {local_stack.api}: run `dlc login`\n"
    result = user.run("get", "x", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["code"] == "not_logged_in"


def test_the_api_comes_from_the_running_stacks_file_or_a_clear_error(
        alice: Dlc, local_stack: RunningStack, tmp_path: Path) -> None:
    env = alice.env(STACK_FILE=str(local_stack.stack_file))
    del env["DLC_API_URL"]
    kinds = json.loads(alice.run("kinds", "--json", env=env).stdout)["items"]
    assert "demo" in [k["kind"] for k in kinds]

    nowhere = {k: v for k, v in env.items() if k != "STACK_FILE"}
    nowhere["DLC_CONFIG_DIR"] = str(tmp_path / "empty")
    result = alice.run("ls", env=nowhere, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("no_api_url: no API to talk to: pass --api-url URL or set DLC_API_URL")


# -- create, wait, download ------------------------------------------------------------------------


def test_create_wait_download_saves_the_file_under_its_name_with_checksums_verified(
        alice: Dlc, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    doc = alice.ok_json("create", "demo", "-p", "rows=2000", "-p", "seed=7", "--name", "Users, 三月",
                        "--wait", "--download", "-o", f"{out}/")
    task, saved = doc["task"], doc["download"]
    assert task["status"] == "succeeded"
    assert task["params"] == {"rows": 2000, "seed": 7}  # typed from the kind's schema: numbers
    path = Path(saved["path"])
    assert path == out / task["file_name"] and task["file_name"].startswith("Users, 三月")
    assert path.stat().st_size == task["size"] == saved["size"]
    assert digests(path) == (task["md5"], task["sha256"])
    assert saved["verified"] == ["md5", "sha256"] and saved["resumed_from"] == 0
    assert not list(out.glob(".*dlc-part*"))
    assert path.read_text(encoding="utf-8").splitlines()[0] == "id,name,email,city,amount,signup_date"

    # the human view of the same: one line on the task, one on the file; nothing on stderr (a pipe)
    again = alice.run("download", task["id"], "-o", str(tmp_path / "copy.csv"))
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert f"Saved {tmp_path / 'copy.csv'} (" in again.stdout and "md5 and sha256 verified" in again.stdout

    # never over an existing file, unless --force
    path.write_text("mine", encoding="utf-8")
    refused = alice.run("download", task["id"], "-o", f"{out}/")
    assert refused.returncode == 2
    assert refused.stderr.startswith("file_exists: ") and "--force" in refused.stderr
    assert path.read_text(encoding="utf-8") == "mine"
    forced = alice.run("download", task["id"], "-o", f"{out}/", "--force")
    assert forced.returncode == 0, forced.stderr
    assert digests(path) == (task["md5"], task["sha256"])


def test_create_takes_a_params_file_format_file_name_and_idempotency_key(alice: Dlc, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"rows": 5, "seed": 1, "bom": False}), encoding="utf-8")
    key = uuid.uuid4().hex
    args = ["create", "demo", "--params-file", str(params), "-p", "seed=3", "-p", "bom=yes",
            "-p", 'headers={"name": "姓名"}', "--format", "csv", "--name", "Options",
            "--file-name", "我的 export", "--idempotency-key", key]
    first = alice.ok_json(*args)
    assert first["params"] == {"rows": 5, "seed": 3, "bom": True, "headers": {"name": "姓名"}}
    assert first["format"] == "csv" and first["file_name"] == "我的 export.csv"
    assert first["task_name"] == "Options"
    assert alice.ok_json(*args)["id"] == first["id"]  # the same key: the same task, not a second one
    assert alice.ok_json("watch", first["id"])["status"] == "succeeded"


def test_json_output_is_one_document_for_every_command(alice: Dlc, export: dict[str, Any]) -> None:
    kinds = alice.ok_json("kinds")["items"]
    assert {"demo", "dynamodb_table"} <= {k["kind"] for k in kinds}
    got = alice.ok_json("get", export["id"])
    assert got["id"] == export["id"] and got["sha256"] == export["sha256"]
    listed = alice.ok_json("ls", "--name", "resumable 用户", "--status", "succeeded")
    assert [t["id"] for t in listed["items"]] == [export["id"]] and listed["next_cursor"] is None
    queued = alice.ok_json("create", "demo", "-p", "rows=10", "--name", "to rename")
    assert queued["status"] in ("queued", "running", "succeeded")
    renamed = alice.ok_json("rename", queued["id"], "renamed 名前")
    assert renamed["task_name"] == "renamed 名前"
    everything = alice.ok_json("ls", "--all", "--limit", "1")
    assert everything["next_cursor"] is None
    assert {export["id"], queued["id"]} <= {t["id"] for t in everything["items"]}
    alice.run("watch", queued["id"])
    assert alice.ok_json("rm", queued["id"]) == {"deleted": queued["id"]}
    assert alice.run("get", queued["id"]).returncode == 4


def test_an_interrupted_download_resumes_from_where_it_stopped_and_verifies(
        alice: Dlc, export: dict[str, Any], tmp_path: Path) -> None:
    part = cut_download(alice, export, tmp_path)
    cut_at = part.stat().st_size

    result = alice.run("download", export["id"], "-o", f"{tmp_path}/", "--json")
    assert result.returncode == 0, result.stderr
    saved = json.loads(result.stdout)["download"]
    assert saved["resumed_from"] == cut_at > 0
    assert f"at byte {cut_at:,} of {export['size']:,}" in result.stderr
    path = tmp_path / export["file_name"]
    assert digests(path) == (export["md5"], export["sha256"]) == (saved["md5"], saved["sha256"])
    assert not part.exists()


def test_a_corrupted_byte_in_the_partial_file_is_caught(alice: Dlc, export: dict[str, Any],
                                                         tmp_path: Path) -> None:
    part = cut_download(alice, export, tmp_path)
    with open(part, "r+b") as fh:
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0x01]))

    result = alice.run("download", export["id"], "-o", f"{tmp_path}/")
    assert result.returncode == 5
    assert result.stderr.splitlines()[-1].startswith("checksum_mismatch: the downloaded file does not match")
    assert "The partial file was deleted" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    # the next run starts over and succeeds
    again = alice.run("download", export["id"], "-o", f"{tmp_path}/", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["download"]["resumed_from"] == 0
    assert digests(tmp_path / export["file_name"]) == (export["md5"], export["sha256"])


@contextlib.contextmanager
def expired_link() -> Iterator[tuple[str, list[str | None]]]:
    """A link that answers as S3 does once a presigned URL has expired; the Range of each request."""
    asked: list[str | None] = []

    class Expired(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.headers.get("Range"))
            body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                    b"<Message>Request has expired</Message></Error>")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Expired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"http://127.0.0.1:{port}/download-center-files/expired?X-Amz-Expires=1", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_resumed_download_replaces_an_expired_link_with_a_fresh_one(
        alice: Dlc, export: dict[str, Any], tmp_path: Path) -> None:
    """The importable Client: a task whose presigned URL has expired since it was read."""
    from dlc import Client
    from dlc.config import TokenStore

    part = cut_download(alice, export, tmp_path)
    cut_at = part.stat().st_size
    client = Client(alice.api, store=TokenStore(alice.config))
    with expired_link() as (url, asked):
        result = client.download({**export, "url": url}, f"{tmp_path}/")
    assert asked == [f"bytes={cut_at}-"]  # the old link was tried once, for the rest of the file
    assert result.resumed_from == cut_at
    assert result.path == tmp_path / export["file_name"]
    assert digests(result.path) == (export["md5"], export["sha256"])
    assert not part.exists()


def interrupted(proc: Any, part: Path, seconds: float, what: str) -> str:
    """Ctrl-C (SIGINT) once ``part`` holds 20 kB: the download exits 130; its stderr."""
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 20_000, seconds, what)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    return err


def cut_download(alice: Dlc, export: dict[str, Any], folder: Path) -> Path:
    """A download stopped by Ctrl-C (SIGINT) partway: exit 130, the partial file kept."""
    part = folder / f".{export['file_name']}.dlc-part"
    err = interrupted(alice.popen("download", export["id"], "-o", f"{folder}/", "--limit-rate", "100k"),
                      part, 30, "the partial file grows")
    size = part.stat().st_size
    assert 0 < size < export["size"]
    assert err.startswith(f"interrupted: download stopped at byte {size:,} of {export['size']:,}; "
                          f"run `dlc download {export['id']} -o {folder}/` to resume it")
    assert not (folder / export["file_name"]).exists()
    return part


# -- exit codes ------------------------------------------------------------------------------------


def test_usage_mistakes_exit_2(alice: Dlc) -> None:
    missing = alice.run("create")
    assert missing.returncode == 2
    assert missing.stderr.startswith("usage: Missing argument 'KIND'.")
    not_a_number = alice.run("create", "demo", "-p", "rows=many")
    assert not_a_number.returncode == 2
    assert not_a_number.stderr == "invalid_param: params.rows: 'many' is not an integer\n"
    unknown = alice.run("create", "demo", "-p", "colour=red")
    assert unknown.returncode == 2 and unknown.stderr.startswith("invalid_param: params.colour: ")
    refused_by_the_api = alice.run("ls", "--status", "lost")
    assert refused_by_the_api.returncode == 2
    assert refused_by_the_api.stderr.startswith("validation_error: ")
    for result in (missing, not_a_number, unknown, refused_by_the_api):
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_unknown_task_exits_4(alice: Dlc) -> None:
    result = alice.run("get", "01AAAAAAAAAAAAAAAAAAAAAAAA")
    assert result.returncode == 4
    assert result.stderr.startswith("not_found: ")


def test_bob_cannot_see_or_touch_alices_task(alice: Dlc, bob: Dlc, export: dict[str, Any],
                                             tmp_path: Path) -> None:
    for args in (("get", export["id"]), ("download", export["id"], "-o", f"{tmp_path}/"),
                 ("cancel", export["id"]), ("rm", export["id"])):
        result = bob.run(*args)
        assert result.returncode == 4, (args, result.stderr)
        assert result.stderr.startswith("not_found: ")
    assert list(tmp_path.iterdir()) == []
    assert alice.ok_json("get", export["id"])["status"] == "succeeded"


def test_a_task_canceled_while_waiting_exits_1(alice: Dlc) -> None:
    name = f"cancel me {uuid.uuid4().hex[:8]}"
    proc = alice.popen("create", "demo", "-p", "rows=5000000", "--name", name, "--wait", "--json")
    try:
        items = wait_for(lambda: alice.ok_json("ls", "--name", name)["items"], 30, "the task is listed")
        assert alice.run("cancel", items[0]["id"]).returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    task = json.loads(out)
    assert task["id"] == items[0]["id"] and task["status"] == "canceled"
    assert err == f"task_canceled: task {task['id']} is canceled\n"

    again = alice.ok_json("retry", task["id"])
    assert again["status"] == "queued" and again["attempts"] == task["attempts"] + 1
    assert alice.ok_json("cancel", task["id"])["status"] in ("canceling", "canceled")


# -- the terminal ----------------------------------------------------------------------------------


def test_wait_and_download_show_live_progress_on_a_terminal_only(alice: Dlc, tmp_path: Path) -> None:
    args = ["create", "demo", "-p", "rows=50000", "--wait", "--download", "-o", f"{tmp_path}/"]
    with in_terminal(alice, *args, "--name", "On a terminal") as (proc, screen):
        wait_for(lambda: exited(proc, screen), 60, "dlc exits")
        shown = screen()
    assert proc.returncode == 0, shown
    lines = shown.splitlines()
    bar = next(line for line in lines if "On a terminal · succeeded" in line)
    assert re.search(r"━+ 100% 50,000 rows \d+\.\d (kB|MB)", bar), bar
    download = next(line for line in lines if line.startswith("On a terminal_") and "━" in line)
    assert re.search(r"━+ (\d+\.\d)/\1 MB", download), download  # all the bytes of the file
    assert re.search(r"Task \w+ “On a terminal” succeeded: On a terminal_\S+\.csv", shown)
    assert "md5 and sha256 verified" in " ".join(shown.split())  # wrapped at the terminal's width

    piped = alice.run(*args, "--name", "On a pipe")
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert "━" not in piped.stdout and "%" not in piped.stdout
    assert re.fullmatch(r"Task \w+ “On a pipe” succeeded: On a pipe_\S+\.csv, [\d.]+ MB, 50,000 rows\n"
                        r"Saved .+ \([\d.]+ MB; md5 and sha256 verified\)\n", piped.stdout)


@pytest.mark.parametrize("cancel_on_interrupt", [False, True], ids=["keeps-the-task", "cancels-it"])
def test_ctrl_c_while_waiting_exits_130_and_says_how_to_go_on(alice: Dlc, cancel_on_interrupt: bool) -> None:
    args = ["create", "demo", "-p", "rows=5000000", "--name", "Interrupted", "--wait"]
    if cancel_on_interrupt:
        args.append("--cancel-on-interrupt")
    with in_terminal(alice, *args) as (proc, screen):
        wait_for(lambda: "Interrupted · running" in screen(), 60, "the progress display shows the build")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: exited(proc, screen), 30, "dlc exits")
        shown = screen()
    assert proc.returncode == 130, shown
    task_id = re.search(r"task (\w+)", shown.split("interrupted: ", 1)[1]).group(1)
    status = alice.ok_json("get", task_id)["status"]
    if cancel_on_interrupt:
        assert f"interrupted: stopped waiting and canceled task {task_id}" in shown
        assert status in ("canceling", "canceled")
    else:
        assert f"Follow it with: dlc watch {task_id}" in shown
        assert status in ("queued", "running")  # still building: Ctrl-C does not cancel
        assert alice.run("cancel", task_id).returncode == 0


# -- segmented builds: parallelism, parts ----------------------------------------------------------


@pytest.fixture(scope="module")
def parts_export(alice: Dlc) -> dict[str, Any]:
    """A succeeded demo export in 3 parts of about 0.7 MB each (``--parallelism 3 --parts``)."""
    task = alice.ok_json("create", "demo", "-p", "rows=30000", "--parallelism", "3", "--parts",
                         "--name", "Parts 分片", "--wait")
    assert task["status"] == "succeeded"
    return task


def parts_stem(task: dict[str, Any]) -> str:
    """The folder `dlc download` makes by default: the parts' names without -0000N-of-0000M.ext."""
    return re.sub(r"-\d{5}-of-\d{5}\..*$", "", task["files"][0]["name"])


def assert_saved(folder: Path, task: dict[str, Any]) -> None:
    """Every file of the task, and its manifest, in ``folder``: the bytes the API's checksums name."""
    for entry in [*task["files"], task["manifest"]]:
        assert digests(folder / entry["name"]) == (entry["md5"], entry["sha256"]), entry["name"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f["name"] for f in task["files"]] + ["manifest.json"])  # and nothing else (no partial files)


def test_create_asks_for_parts_and_download_saves_each_file_and_the_manifest(
        alice: Dlc, parts_export: dict[str, Any], tmp_path: Path) -> None:
    task = parts_export
    assert (task["parallelism"], task["output"]) == (3, "parts")
    assert task["url"] is None and len(task["files"]) == 3 and task["manifest"]["name"] == "manifest.json"

    # by default into a folder named after the parts, here
    result = alice.run("download", task["id"], "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = json.loads(result.stdout)["download"]
    folder = tmp_path / parts_stem(task)
    assert saved["path"] == str(folder) and task["file_name"].startswith(folder.name)
    assert_saved(folder, task)
    assert [Path(f["path"]).name for f in saved["files"]] == [f["name"] for f in task["files"]]
    assert saved["size"] == task["size"] == sum(f["size"] for f in task["files"])
    assert saved["verified"] == ["md5", "sha256", "manifest"] and saved["kept"] == []
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["task_id"] == task["id"] and manifest["rows"] == 30000
    assert [f["sha256"] for f in manifest["files"]] == [f["sha256"] for f in task["files"]]

    # the human view, into the folder -o names; then again: what is there and whole is kept
    out = tmp_path / "exports" / "parts"
    first = alice.run("download", task["id"], "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    said = " ".join(first.stdout.split())
    assert f"Saved 3 files and manifest.json in {out} (" in said
    assert "each file's md5 and sha256 verified, and the manifest's list of them)" in said
    assert_saved(out, task)
    again = alice.run("download", task["id"], "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert "4 of them already there, kept" in " ".join(again.stdout.split())  # (wrapped at 200)

    # a file there that is not the task's is never overwritten, unless --force
    victim = out / task["files"][1]["name"]
    victim.write_bytes(b"mine")
    refused = alice.run("download", task["id"], "-o", str(out))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"file_exists: {victim} already exists and is not this task's")
    assert victim.read_bytes() == b"mine"
    forced = alice.run("download", task["id"], "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert_saved(out, task)


def test_an_interrupted_parts_download_resumes_in_the_file_it_stopped_in(
        alice: Dlc, parts_export: dict[str, Any], tmp_path: Path) -> None:
    task = parts_export
    first, second = (tmp_path / f["name"] for f in task["files"][:2])
    part = tmp_path / f".{second.name}.dlc-part"
    err = interrupted(alice.popen("download", task["id"], "-o", str(tmp_path), "--limit-rate", "300k"),
                      part, 60, "the second file's partial grows")
    cut = part.stat().st_size
    assert 0 < cut < task["files"][1]["size"]
    assert err.startswith(f"interrupted: download stopped in {second.name} (file 2 of 4) at byte {cut:,}; "
                          f"the files before it are saved in {tmp_path}; "
                          f"run `dlc download {task['id']} -o {tmp_path}` to resume it")
    assert digests(first) == (task["files"][0]["md5"], task["files"][0]["sha256"])
    assert not second.exists()

    result = alice.run("download", task["id"], "-o", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    saved = json.loads(result.stdout)["download"]
    assert saved["kept"] == [first.name]  # whole and matching: not fetched again
    assert saved["files"][1]["resumed_from"] == cut  # picked up where it stopped
    assert saved["files"][2]["resumed_from"] == 0
    assert f"Resuming {second.name} at byte {cut:,}" in result.stderr
    assert_saved(tmp_path, task)


def test_a_manifest_that_does_not_list_the_files_is_caught(
        alice: Dlc, parts_export: dict[str, Any], tmp_path: Path) -> None:
    """The importable Client, given the task as if the API had listed one file fewer than its manifest."""
    from dlc import ChecksumMismatch, Client
    from dlc.config import TokenStore

    client = Client(alice.api, store=TokenStore(alice.config))
    fewer = {**parts_export, "files": parts_export["files"][:2]}
    with pytest.raises(ChecksumMismatch) as caught:
        client.download(fewer, tmp_path)
    assert caught.value.code == "manifest_mismatch" and caught.value.exit_code == 5
    missing = parts_export["files"][2]["name"]
    assert f"it lists {missing}, which the task does not have" in caught.value.message
    # the real task's download goes through, keeping the two files already there
    result = client.download(parts_export["id"], tmp_path)
    assert [f.path.name for f in result.files] == [f["name"] for f in parts_export["files"]]
    assert result.kept == [f["name"] for f in parts_export["files"][:2]] + ["manifest.json"]
    assert_saved(tmp_path, parts_export)


def test_get_and_ls_show_the_files_of_a_parts_task(alice: Dlc, parts_export: dict[str, Any]) -> None:
    task = parts_export
    shown = alice.run("get", task["id"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "build     parallelism 3, output parts" in lines
    assert any(re.fullmatch(r"files     3 files, [\d.]+ MB", line) for line in lines), lines
    for entry in task["files"]:
        line = rf" +{re.escape(entry['name'])}  [\d.]+ kB, 10,000 rows"
        assert any(re.fullmatch(line, shown_line) for shown_line in lines), entry["name"]
        assert f"sha256 {entry['sha256']}" in shown.stdout and f"md5 {entry['md5']}" in shown.stdout
    assert f"sha256 {task['manifest']['sha256']}" in shown.stdout
    listed = alice.run("ls", "--name", "Parts 分片")
    assert re.search(rf"{task['id']} +Parts 分片 +demo/csv +succeeded +[\d.]+ MB in 3 files",
                     listed.stdout), listed.stdout


def test_segments_are_counted_while_a_segmented_build_runs(alice: Dlc) -> None:
    task = alice.ok_json("create", "demo", "-p", "rows=5000000", "--parallelism", "8", "--parts",
                         "--name", "eight segs")
    try:
        def counted() -> Any:
            shown = alice.run("get", task["id"]).stdout
            return re.search(r"progress +[\d,]+ rows, .*, [1-7] of 8 segments done", shown) and shown
        shown = wait_for(counted, 60, "dlc get counts the segments done")
        assert re.search(r"status +running", shown)
        listed = alice.run("ls", "--name", "eight segs", "--status", "running").stdout
        row = rf"{task['id']} +eight segs +demo/csv +running +\d+% \([1-8]/8 segments\)"
        assert re.search(row, listed), listed
        # the live bar on a terminal says it too
        with in_terminal(alice, "watch", task["id"]) as (proc, screen):
            wait_for(lambda: re.search(r"eight segs · running · [1-8]/8 segments", screen()), 60,
                     "the progress display counts the segments")
            proc.send_signal(signal.SIGINT)
            wait_for(lambda: exited(proc, screen), 30, "dlc exits")
        assert proc.returncode == 130
    finally:
        alice.run("cancel", task["id"])


def test_parallelism_mistakes_exit_2(alice: Dlc) -> None:
    words = alice.run("create", "demo", "--parallelism", "lots")
    assert words.returncode == 2
    assert words.stderr.startswith("usage: Invalid value for '--parallelism': 'lots' is not a number")
    # the API's refusal: an xlsx file is one worker's unless it is built as parts
    xlsx = alice.run("create", "demo", "-f", "xlsx", "-p", "rows=10", "--parallelism", "4")
    assert xlsx.returncode == 2
    assert xlsx.stderr.startswith("validation_error: parallelism must be 1 or \"auto\"")
    assert alice.ok_json("create", "demo", "-f", "xlsx", "-p", "rows=10", "--parallelism", "2",
                         "--parts", "--wait")["files"][1]["name"].endswith("-00002-of-00002.xlsx")


# -- a single file built in segments: verified by its ranges (issue 18) ---------------------------
#
# Such a task's segments upload their parts straight into its one multipart upload: no md5 or
# sha256 of the whole exists, and the task lists `ranges` instead, each with its own. These tests
# serve the task and its file from a small API of their own on 127.0.0.1 (the resource as
# docs/openapi.yaml's FileRange says it), so they do not wait for a build to make one.

RANGE_TASK_ID = "01RANGESAAAAAAAAAAAAAAAAAA"


def ranges_of(body: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    """The ranges of ``body`` between ``cuts`` (0, ..., len(body)), one a segment, as the API lists them."""
    return [{"segment": index, "start": start, "size": end - start, "rows": (end - start) // 30,
             "md5": hashlib.md5(body[start:end], usedforsecurity=False).hexdigest(),
             "sha256": hashlib.sha256(body[start:end]).hexdigest()}
            for index, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False), 1)]


@dataclass
class FakeApi:
    """An API of one succeeded task in ranges, its file served with Range support."""

    api: str
    task: dict[str, Any]
    #: the bytes the file's URL serves (the task's ranges are of the right ones)
    served: bytearray
    #: the Range header of each request for the file (None: the whole)
    asked: list[str | None]


@contextlib.contextmanager
def ranges_api(body: bytes, cuts: list[int]) -> Iterator[FakeApi]:
    asked: list[str | None] = []
    served = bytearray(body)

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == f"/downloads/{RANGE_TASK_ID}":
                return self._send(200, json.dumps(fake.task).encode(), "application/json")
            if self.path == f"/downloads/{RANGE_TASK_ID}/file":
                self.send_response(302)
                self.send_header("Location", fake.task["url"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if self.path.startswith("/files/"):
                asked.append(self.headers.get("Range"))
                if not self.headers.get("Range"):
                    return self._send(200, bytes(served), "text/csv")
                first, last = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers["Range"]).groups()
                start, end = int(first), min(int(last or len(served) - 1), len(served) - 1)
                return self._send(206, bytes(served[start:end + 1]), "text/csv",
                                  {"Content-Range": f"bytes {start}-{end}/{len(served)}"})
            body = json.dumps({"error": {"code": "not_found", "message": "no such task"}}).encode()
            return self._send(404, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client cut short
                self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    api = f"http://127.0.0.1:{server.server_address[1]}"
    task = {
        "id": RANGE_TASK_ID, "task_name": "Segmented 分段", "file_name": "segmented_20261208.csv",
        "kind": "demo", "format": "csv", "params": {"rows": 10000}, "status": "succeeded",
        "progress": {"rows": sum(r["rows"] for r in ranges_of(body, cuts)), "bytes": len(body),
                     "percent": 100},
        "size": len(body), "md5": None, "sha256": None, "content_type": "text/csv",
        "url": f"{api}/files/{RANGE_TASK_ID}?X-Amz-Expires=900", "url_expires_at": "2099-01-01T00:00:00Z",
        "parallelism": len(cuts) - 1, "output": "single", "files": None, "manifest": None,
        "ranges": ranges_of(body, cuts), "error": None, "warnings": [], "notify": {"email": False},
        "owner": "sub-alice", "owner_name": "alice", "tenant": "acme", "attempts": 1,
        "created_at": "2026-12-08T03:00:00.000Z", "started_at": "2026-12-08T03:00:01.000Z",
        "finished_at": "2026-12-08T03:00:09.000Z", "expires_at": "2099-01-01T00:00:00.000Z",
    }
    fake = FakeApi(api, task, served, asked)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


#: a csv of some 600 kB in 3 ranges of unequal sizes (the last segment's is the smallest)
RANGES_BODY = b"id,name,amount\n" + b"".join(f"{i},user {i:06d},{i * 7 % 1000}.50\n".encode()
                                            for i in range(24_000))
RANGES_CUTS = [0, 250_000, 520_000, len(RANGES_BODY)]


@pytest.fixture
def segmented(installed: Path, tmp_path: Path) -> Iterator[tuple[FakeApi, Dlc]]:
    """The fake API with its task in ranges, and a ``dlc`` signed in to it (a token kept for a day)."""
    from dlc.client import Tokens
    from dlc.config import TokenStore

    with ranges_api(RANGES_BODY, RANGES_CUTS) as fake:
        user = Dlc(fake.api, tmp_path / "config", tmp_path / "work")
        user.workdir.mkdir()
        TokenStore(user.config).put(fake.api, Tokens(
            id_token="header.payload.signature", refresh_token=None, expires_at=time.time() + 86400,
            username="alice", client_id="fake", cognito_endpoint=f"{fake.api}/cognito").to_json())
        yield fake, user


def test_a_task_in_ranges_downloads_and_each_range_is_verified(
        segmented: tuple[FakeApi, Dlc], tmp_path: Path) -> None:
    fake, user = segmented
    doc = user.ok_json("download", RANGE_TASK_ID, "-o", f"{tmp_path}/out/")
    saved = doc["download"]
    path = tmp_path / "out" / fake.task["file_name"]
    assert Path(saved["path"]) == path and path.read_bytes() == RANGES_BODY
    assert saved["size"] == fake.task["size"] and saved["resumed_from"] == 0
    assert saved["verified"] == ["ranges"] and saved["ranges"] == 3
    assert saved["md5"] is None and saved["sha256"] is None  # none of the whole to compare
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial file left

    human = user.run("download", RANGE_TASK_ID, "-o", str(tmp_path / "copy.csv"))
    assert human.returncode == 0, human.stderr
    assert human.stderr == ""
    assert f"Saved {tmp_path / 'copy.csv'} (" in human.stdout
    assert "3 ranges verified, each by its md5 and sha256)" in human.stdout
    assert (tmp_path / "copy.csv").read_bytes() == RANGES_BODY

    # dlc get: verified by its ranges (listed, with their checksums), not a missing sha256
    shown = user.run("get", RANGE_TASK_ID)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert not any(line.startswith(("md5 ", "sha256 ")) for line in lines)
    assert any(re.fullmatch(r"ranges +verified by 3 ranges, each with its md5 and sha256 \(built in "
                            r"segments: none of the whole\)", line) for line in lines), lines
    assert any(re.fullmatch(r" +segment 2  bytes 250,000-519,999  270\.0 kB, 9,000 rows", line)
               for line in lines), lines
    for entry in fake.task["ranges"]:
        assert f"sha256 {entry['sha256']}" in shown.stdout and f"md5 {entry['md5']}" in shown.stdout
    assert any(re.fullmatch(rf"download +dlc download {RANGE_TASK_ID} \(verified by its 3 ranges\)", line)
               for line in lines), lines


def test_a_flipped_byte_in_one_range_exits_5_removes_the_file_and_names_the_range(
        segmented: tuple[FakeApi, Dlc], tmp_path: Path) -> None:
    fake, user = segmented
    fake.served[300_000] ^= 0x01  # in range 2 (segment 2, bytes 250,000-519,999)
    result = user.run("download", RANGE_TASK_ID, "-o", f"{tmp_path}/")
    assert result.returncode == 5, result.stderr
    said = result.stderr.splitlines()[-1]
    assert said.startswith("checksum_mismatch: the downloaded file does not match the task: "
                           "range 2 of 3 (segment 2, bytes 250000-519999): md5 ")
    assert f"(the task says {fake.task['ranges'][1]['sha256']})" in said
    assert "range 1 " not in said and "range 3 " not in said  # the others matched
    assert said.endswith("The partial file was deleted; run the download again to fetch it anew")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "work"]  # no file, no partial file

    as_json = user.run("download", RANGE_TASK_ID, "-o", f"{tmp_path}/", "--json")
    assert as_json.returncode == 5
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "checksum_mismatch"
    assert [(r["index"], r["segment"], r["start"], r["size"]) for r in error["details"]["ranges"]] == [
        (2, 2, 250_000, 270_000)]
    bad = bytearray(RANGES_BODY[250_000:520_000])
    bad[50_000] ^= 0x01
    assert error["details"]["ranges"][0]["got_sha256"] == hashlib.sha256(bad).hexdigest()
    assert not (tmp_path / fake.task["file_name"]).exists()


@pytest.mark.parametrize("corrupt", [False, True], ids=["verifies", "a-flipped-byte-in-the-partial-file"])
def test_a_resumed_download_of_a_task_in_ranges_verifies_each_range(
        segmented: tuple[FakeApi, Dlc], tmp_path: Path, corrupt: bool) -> None:
    fake, user = segmented
    folder = tmp_path / "out"
    folder.mkdir()
    part = folder / f".{fake.task['file_name']}.dlc-part"
    err = interrupted(user.popen("download", RANGE_TASK_ID, "-o", f"{folder}/", "--limit-rate", "100k"),
                      part, 30, "the partial file grows")
    cut = part.stat().st_size
    assert 0 < cut < RANGES_CUTS[1]  # stopped in the first range
    assert err.startswith(f"interrupted: download stopped at byte {cut:,} of {len(RANGES_BODY):,}")
    if corrupt:
        with open(part, "r+b") as fh:
            fh.seek(10)
            byte = fh.read(1)
            fh.seek(10)
            fh.write(bytes([byte[0] ^ 0x01]))

    result = user.run("download", RANGE_TASK_ID, "-o", f"{folder}/", "--json")
    assert fake.asked[-1] == f"bytes={cut}-"  # picked up where it stopped
    assert f"Resuming {fake.task['file_name']} at byte {cut:,}" in result.stderr
    if corrupt:
        assert result.returncode == 5, result.stderr
        assert ("checksum_mismatch: the downloaded file does not match the task: range 1 of 3 "
                "(segment 1, bytes 0-249999): md5 ") in result.stderr
        assert sorted(p.name for p in folder.iterdir()) == []
        return
    assert result.returncode == 0, result.stderr
    saved = json.loads(result.stdout)["download"]
    assert saved["resumed_from"] == cut and saved["verified"] == ["ranges"] and saved["ranges"] == 3
    assert (folder / fake.task["file_name"]).read_bytes() == RANGES_BODY
    assert sorted(p.name for p in folder.iterdir()) == [fake.task["file_name"]]


def test_the_client_class_verifies_ranges_too(segmented: tuple[FakeApi, Dlc], tmp_path: Path) -> None:
    """The importable Client: the same verification; ranges that do not cover the file are refused."""
    from dlc import ApiError, ChecksumMismatch, Client, check_ranges

    fake, _user = segmented
    client = Client(fake.api, token="header.payload.signature")
    result = client.download(RANGE_TASK_ID, tmp_path / "a.csv")
    assert (result.size, result.verified, result.ranges, result.sha256) == (
        len(RANGES_BODY), ["ranges"], 3, None)
    assert check_ranges(result.path, fake.task["ranges"], workers=1) == []

    fake.served[-1:] = b"!"  # the last byte: in the last range
    with pytest.raises(ChecksumMismatch) as caught:
        client.download(RANGE_TASK_ID, tmp_path / "b.csv")
    assert caught.value.exit_code == 5
    assert [r["segment"] for r in caught.value.details["ranges"]] == [3]
    assert f"range 3 of 3 (segment 3, bytes 520000-{len(RANGES_BODY) - 1}): " in caught.value.message
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / ".b.csv.dlc-part").exists()

    # ranges that leave a gap, or do not add up to the task's size: the API's mistake, before a byte
    asked = len(fake.asked)
    gap = [dict(r) for r in fake.task["ranges"]]
    gap[1]["start"] += 1
    short = fake.task["ranges"][:2]
    for ranges, words in ((gap, "range 2 starts at byte 250001"), (short, "add up to 520000 bytes")):
        with pytest.raises(ApiError) as refused:
            client.download({**fake.task, "ranges": ranges}, tmp_path / "c.csv")
        assert refused.value.code == "bad_response" and words in refused.value.message
    assert len(fake.asked) == asked and not list(tmp_path.glob(".c.csv*"))

    # an empty range (a segment that found no rows) has nothing to hash, and matches
    empty = tmp_path / "empty-range.bin"
    empty.write_bytes(b"abc")
    assert check_ranges(empty, ranges_of(b"abc", [0, 0, 3])) == []


# -- what dlc shows of names and messages from elsewhere (issue 19) ---------------------------------
#
# The API refuses control and format characters in names now, so a task that holds them comes from
# before, from another deployment, or from a server that is not the API: a small API of the tests'
# own on 127.0.0.1 serves one, as the tests of ranges above do.

#: an ANSI "clear the screen", a terminal title (OSC), a CR/LF that fakes a row of the listing, a C1
#: CSI, and a right-to-left override that makes "FAKE ROWfdp.exe" read "FAKE ROWexe.pdf"
EVIL_NAME = "evil\x1b[2J\x1b]0;pwned\x07\r\nFAKE ROW\x9b31m\u202efdp.exe\u200b"
EVIL_SHOWN = "evil[2J]0;pwnedFAKE ROW31mfdp.exe"
EVIL_TASK_ID = "01EVILAAAAAAAAAAAAAAAAAAAA"


@dataclass
class ScriptedApi:
    """A loopback API that answers each ``(method, path)`` with a JSON document; 404 otherwise."""

    api: str
    routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]]
    asked: list[str]


@contextlib.contextmanager
def scripted_api() -> Iterator[ScriptedApi]:
    asked: list[str] = []
    routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = {}

    class Api(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            asked.append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, doc, headers = routes.get((self.command, self.path.split("?")[0]), (
                404, {"error": {"code": "not_found", "message": "no task \x1b]0;owned\x07here\r\nFAKE"}}, {}))
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        do_GET = do_POST = do_PATCH = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    fake = ScriptedApi(f"http://127.0.0.1:{server.server_address[1]}", routes, asked)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def signed_in_to(api: str, tmp_path: Path, cognito_endpoint: str | None = None,
                 refresh_token: str | None = None) -> Dlc:
    """A ``dlc`` with a stored sign-in to ``api`` (a token kept for a day), as the ranges tests do."""
    from dlc.client import Tokens
    from dlc.config import TokenStore

    user = Dlc(api, tmp_path / "config", tmp_path / "work")
    user.workdir.mkdir(exist_ok=True)
    TokenStore(user.config).put(api, Tokens(
        id_token="header.payload.signature", refresh_token=refresh_token, expires_at=time.time() + 86400,
        username="alice", client_id="fake", cognito_endpoint=cognito_endpoint or f"{api}/cognito").to_json())
    return user


def evil_task(**changes: Any) -> dict[str, Any]:
    return {"id": EVIL_TASK_ID, "task_name": EVIL_NAME, "file_name": "report\u202efdp.exe\x1b[5m.csv",
            "kind": "demo", "format": "csv", "params": {"rows": 10}, "status": "succeeded",
            "progress": {"rows": 10, "bytes": 120, "percent": 100}, "size": 120, "md5": "0" * 32,
            "sha256": "0" * 64, "error": None, "warnings": [], "owner": "sub-mallory",
            "owner_name": "mallory\x1b[8m", "tenant": "acme", "attempts": 1, "files": None,
            "created_at": "2026-12-08T03:00:00.000Z", "finished_at": "2026-12-08T03:00:09.000Z",
            "expires_at": "2099-01-01T00:00:00.000Z", **changes}


def terminal_bytes(dlc: Dlc, *args: str, timeout: float = 30) -> tuple[int, bytes]:
    """``dlc`` run to its end on a pseudo-terminal of 120 x 30: its exit code and every byte it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([str(DLC), *args], stdin=slave, stdout=slave, stderr=slave,
                            env=dlc.env(TERM="xterm-256color"), cwd=dlc.workdir, preexec_fn=_default_sigint)
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen.extend(chunk)
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


#: what rich itself writes: colours (SGR), and for a live bar the cursor's moves and line erasures
#: (a CR, then "erase the line")
RICH_SEQUENCES = re.compile(rb"\r(?=\x1b\[2K)|\x1b\[[0-9;?]*[mAKGlh]")


def assert_no_injected_sequence(raw: bytes) -> str:
    """Every ESC is one of rich's own, every CR ends a line (the terminal's CR LF), no C1, no Cf;
    the text shown (rich's sequences removed) is returned."""
    text = RICH_SEQUENCES.sub(b"", raw).decode("utf-8")
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)
    assert "\u202e" not in text and "\u200b" not in text, repr(text)
    assert not re.search(r"\r(?!\n)", text.replace("\r\r\n", "\r\n")), repr(text)
    lines = text.replace("\r\n", "\n").split("\n")
    assert not any(line.startswith("FAKE") for line in lines), lines
    return text


def test_ls_get_watch_and_errors_show_no_control_or_format_character_of_a_name(
        installed: Path, tmp_path: Path) -> None:
    """A tenant admin's `dlc ls` of a task named with an ANSI sequence, a CR/LF and a bidi override:
    no sequence reaches the terminal, no fake row appears, the name is shown without them."""
    with scripted_api() as fake:
        task = evil_task()
        fake.routes[("GET", "/downloads")] = (200, {"items": [task], "next_cursor": None}, {})
        fake.routes[("GET", f"/downloads/{EVIL_TASK_ID}")] = (200, task, {})
        user = signed_in_to(fake.api, tmp_path)

        code, raw = terminal_bytes(user, "ls")
        assert code == 0, raw
        shown = assert_no_injected_sequence(raw)
        row = next(line for line in shown.splitlines() if line.startswith(EVIL_TASK_ID))
        assert EVIL_SHOWN in row and "succeeded" in row

        code, raw = terminal_bytes(user, "get", EVIL_TASK_ID)
        assert code == 0, raw
        shown = assert_no_injected_sequence(raw)
        assert re.search(r"name +" + re.escape(EVIL_SHOWN), shown), shown
        assert re.search(r"file +reportfdp\.exe\[5m\.csv", shown) and re.search(r"owner +mallory\[8m", shown)

        # the live bar (on stderr, a terminal here) and the line after it
        code, raw = terminal_bytes(user, "watch", EVIL_TASK_ID)
        assert code == 0, raw
        shown = assert_no_injected_sequence(raw)
        assert "evil[2J]0;pwnedFAKE ROW31mfdp.e… · succeeded" in shown, shown  # cut at 32
        assert f"“{EVIL_SHOWN}” succeeded" in shown.replace("\r\n", "")

        # an error message of the API's, on stderr
        code, raw = terminal_bytes(user, "get", "01NOSUCHTASKAAAAAAAAAAAAAA")
        assert code == 4, raw
        shown = assert_no_injected_sequence(raw)
        assert "not_found: no task ]0;ownedhereFAKE" in shown


def test_an_error_names_the_presigned_url_without_its_query(installed: Path, tmp_path: Path) -> None:
    """A presigned link's query is its signature (a bearer credential for 15 minutes): a message that
    names the link, here a download that cannot connect, must not carry it."""
    from tests.e2e.conftest import free_ports

    (closed,) = free_ports(1)
    link = (f"http://127.0.0.1:{closed}/download-center-files/acme/{EVIL_TASK_ID}/report.csv"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASECRETCREDENTIAL%2F20261208"
            "&X-Amz-Expires=900&X-Amz-Signature=0123456789abcdefSECRETSIGNATURE")
    with scripted_api() as fake:
        task = evil_task(task_name="Users", file_name="report.csv", url=link)
        fake.routes[("GET", f"/downloads/{EVIL_TASK_ID}")] = (200, task, {})
        fake.routes[("GET", f"/downloads/{EVIL_TASK_ID}/file")] = (302, None, {"Location": link})
        user = signed_in_to(fake.api, tmp_path)

        result = user.run("download", EVIL_TASK_ID, "-o", f"{tmp_path}/")
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"unreachable: cannot download the file of task {EVIL_TASK_ID}: ")
        assert f"/download-center-files/acme/{EVIL_TASK_ID}/report.csv" in result.stderr  # the path stays
        as_json = user.run("download", EVIL_TASK_ID, "-o", f"{tmp_path}/", "--json")
        assert json.loads(as_json.stdout)["error"]["code"] == "unreachable"
    for said in (result.stderr, as_json.stdout, as_json.stderr):
        assert "SECRET" not in said and "X-Amz-" not in said, said


# -- whom dlc sends a password to (issue 19) --------------------------------------------------------
#
# 10.0.0.1 stands for another machine; nothing here connects to it. Every request dlc would make to
# a host other than this one goes through HTTP(S)_PROXY, a server of the test's own on 127.0.0.1 that
# plays the planted file's server: it names itself as Cognito and records what it is sent. Before
# issue 19 it received {"USERNAME": "alice", "PASSWORD": ...}.

ELSEWHERE = "http://10.0.0.1:9"


@dataclass
class Trap:
    proxy: str
    #: every request it got: "GET http://10.0.0.1:9/console/config.json", "CONNECT 10.0.0.1:9", ...
    asked: list[str]
    #: the bodies posted to it (a password, if dlc sent one)
    bodies: list[str]


@contextlib.contextmanager
def trap_proxy() -> Iterator[Trap]:
    asked: list[str] = []
    bodies: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            asked.append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                bodies.append(self.rfile.read(length).decode("utf-8", "replace"))
            if self.command == "GET" and self.path.endswith("/console/config.json"):
                status, doc = 200, {"client_id": "planted", "cognito_endpoint": f"{ELSEWHERE}/"}
            else:
                status, doc = 400, {"__type": "NotAuthorizedException", "message": "recorded"}
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_CONNECT = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Trap(f"http://127.0.0.1:{server.server_address[1]}", asked, bodies)
    finally:
        server.shutdown()
        server.server_close()


def trapped_env(user: Dlc, trap: Trap, **extra: str) -> dict[str, str]:
    """``user``'s environment with no API chosen, and every other host reached through ``trap``."""
    env = {k: v for k, v in user.env(**extra).items() if not k.lower().endswith("_proxy")}
    env.pop("DLC_API_URL", None)
    loopback = "127.0.0.1,localhost"
    env.update({"HTTP_PROXY": trap.proxy, "HTTPS_PROXY": trap.proxy, "http_proxy": trap.proxy,
                "https_proxy": trap.proxy, "NO_PROXY": loopback, "no_proxy": loopback, **extra})
    return env


@pytest.mark.parametrize("planted", [ELSEWHERE, "https://download-center.example.com"])
def test_a_planted_stack_file_naming_another_host_is_refused_before_any_connection(
        installed: Path, tmp_path: Path, planted: str) -> None:
    clone = tmp_path / "cloned-repo"
    (clone / ".local").mkdir(parents=True)
    stack_file = clone / ".local" / "stack.json"
    stack_file.write_text(json.dumps({"api_url": planted, "console_url": f"{planted}/",
                                      "aws_endpoint_url": ELSEWHERE}), encoding="utf-8")
    user = Dlc("unused", tmp_path / "config", clone / "src" / "deep")
    user.workdir.mkdir(parents=True)
    host = planted.split("://")[1].split(":")[0]
    with trap_proxy() as trap:
        env = trapped_env(user, trap)
        login = user.run("login", "-u", "alice", "--password-stdin", stdin="hunter2-secret\n", env=env)
        listing = user.run("ls", env=env)
    for result in (login, listing):
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"untrusted_stack_file: {stack_file} names the API {planted}, "
                                        f"on {host}, which is not this machine"), result.stderr
        assert "--api-url" in result.stderr and "Traceback" not in result.stderr
    assert trap.asked == [] and trap.bodies == []
    assert not (user.config / "tokens.json").exists()


def test_plain_http_to_another_host_is_refused_wherever_it_is_given(installed: Path, tmp_path: Path) -> None:
    user = Dlc("unused", tmp_path / "config", tmp_path)
    with trap_proxy() as trap:
        env = trapped_env(user, trap)
        given = user.run("--api-url", ELSEWHERE, "login", "-u", "alice", "--password-stdin",
                         stdin="hunter2-secret\n", env=env)
        from_env = user.run("ls", env={**env, "DLC_API_URL": f"{ELSEWHERE}/"})
        for result in (given, from_env):
            assert result.returncode == 2, result.stderr
            assert result.stderr == (f"insecure_url: the API {ELSEWHERE} is plain http:// to 10.0.0.1, which "
                                     "is not this machine: dlc sends passwords and tokens over https:// only "
                                     "(plain http:// only to 127.0.0.1, ::1 or localhost)\n")
        assert trap.asked == []
        # https to that host is taken (here it goes no further than the proxy's CONNECT)
        secure = user.run("--api-url", "https://10.0.0.1:9", "login", "-u", "alice", "--password-stdin",
                          stdin="hunter2-secret\n", env=env)
        assert secure.returncode == 1 and secure.stderr.startswith("unreachable: ")
        assert trap.asked == ["CONNECT 10.0.0.1:9"] and trap.bodies == []


def test_an_api_that_names_a_plain_http_cognito_elsewhere_gets_no_password(
        installed: Path, tmp_path: Path) -> None:
    with scripted_api() as fake, trap_proxy() as trap:
        fake.routes[("GET", "/console/config.json")] = (
            200, {"client_id": "c", "cognito_endpoint": f"{ELSEWHERE}/"}, {})
        user = Dlc(fake.api, tmp_path / "config", tmp_path)
        result = user.run("login", "-u", "alice", "--password-stdin", stdin="hunter2-secret\n",
                          env=trapped_env(user, trap, DLC_API_URL=fake.api))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(
            f"insecure_url: the Cognito endpoint {ELSEWHERE}/ (named by {fake.api}/console/config.json) "
            "is plain http:// to 10.0.0.1, which is not this machine")
        assert fake.asked == ["GET /console/config.json"]
        assert trap.asked == [] and trap.bodies == []


def test_login_says_where_it_signs_in_before_it_asks_for_the_password(
        alice: Dlc, local_stack: RunningStack, tmp_path: Path) -> None:
    """On a terminal, from a folder below the running stack's .local/stack.json (a loopback one,
    which keeps working): the API, where its address came from, and the Cognito endpoint, then
    the prompt."""
    project = tmp_path / "project"
    (project / ".local").mkdir(parents=True)
    stack_file = project / ".local" / "stack.json"
    stack_file.write_text(local_stack.stack_file.read_text(encoding="utf-8"), encoding="utf-8")
    user = Dlc(local_stack.api, tmp_path / "config", project / "sub")
    user.workdir.mkdir()
    env = {k: v for k, v in user.env(TERM="xterm-256color").items() if k != "DLC_API_URL"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([str(DLC), "login", "-u", "alice"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=user.workdir, preexec_fn=_default_sigint)
    os.close(slave)
    seen = bytearray()

    def screen() -> str:
        while select.select([master], [], [], 0.05)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen.extend(chunk)
        return ANSI.sub("", seen.decode("utf-8", "replace"))

    try:
        shown = wait_for(lambda: "Password:" in screen() and screen(), 30, "dlc asks for the password")
        where = (f"Signing in to {local_stack.api} (from {stack_file}) through Cognito at "
                 f"{local_stack.info['aws_endpoint_url']}")
        assert where in shown and shown.index(where) < shown.index("Password:"), shown
        os.write(master, (_password(local_stack, "alice") + "\r").encode())
        wait_for(lambda: proc.poll() is not None and screen() is not None, 30, "dlc signs in")
        assert proc.returncode == 0, screen()
        assert f"Signed in to {local_stack.api} as alice" in screen()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(master)
