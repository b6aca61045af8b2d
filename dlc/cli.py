"""The ``dlc`` command: a thin layer of click over :class:`dlc.client.Client`.

Each command parses its arguments, makes one or a few client calls, and
hands the result to :mod:`dlc.display` (or prints it as JSON). Every failure
ends in :func:`run`, which prints ``code: message`` on stderr and returns the
documented exit code, so nothing reaches the user as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.text import Text

from dlc import display
from dlc.client import (
    Client,
    DownloadResult,
    PartsResult,
    Task,
    is_parts,
    part_path,
    parts_folder,
    target_path,
)
from dlc.config import TokenStore, resolve_api_url
from dlc.errors import (
    EXIT_INTERRUPTED,
    DlcError,
    TaskNotSucceeded,
    UsageError,
)
from dlc.params import typed_params
from dlc.sanitize import printable

EPILOG = """\b
Exit codes: 0 done; 1 the task failed or was canceled (or the request failed
otherwise); 2 usage; 3 not signed in, or the sign-in was refused; 4 no such
task (or its file expired); 5 the downloaded file failed its checksums;
130 interrupted (Ctrl-C).

\b
Where to talk to: --api-url, else $DLC_API_URL, else the running local
stack's .local/stack.json (or $STACK_FILE) if it names this machine, else the
API of the last login; https://, or plain http:// on this machine only.
Sign-ins are kept in $DLC_CONFIG_DIR, else $XDG_CONFIG_HOME/dlc, else
~/.config/dlc (tokens.json, mode 0600). See docs/cli.md.
"""


API_URL_HELP = "The API to talk to (default: $DLC_API_URL, the local stack, the last login)."
JSON_HELP = "Print one JSON document on stdout, nothing else (for scripts)."
INTERRUPT_HELP = "Cancel the task on Ctrl-C (default: leave it running)."


class Interrupted(DlcError):
    """Ctrl-C: the command stopped (the task goes on unless --cancel-on-interrupt said otherwise)."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class State:
    """What the group and each command's common options say, shared through click's context."""

    api_url: str | None = None
    json: bool = False
    store: TokenStore = field(default_factory=TokenStore)
    _client: Client | None = None
    #: where the API's address came from (--api-url, DLC_API_URL, a stack file, the last login)
    api_source: str = ""

    def client(self) -> Client:
        if self._client is None:
            url, self.api_source = resolve_api_url(self.api_url, self.store)
            self._client = Client(url, store=self.store)
        return self._client


def _state() -> State:
    return click.get_current_context().ensure_object(State)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).json = True


def _set_api_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(State).api_url = value


def common(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` and ``--api-url`` on every command (also accepted before the command's name)."""
    func = click.option("--api-url", metavar="URL", expose_value=False, callback=_set_api_url,
                        help=API_URL_HELP)(func)
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
                        help=JSON_HELP)(func)


def emit(doc: Any, human: Callable[[], None]) -> None:
    """The result: JSON for scripts, or the human view."""
    if _state().json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        human()


def _print(*renderables: Any) -> None:
    display.stdout_console().print(*renderables)


def _width() -> int:
    """The terminal's width, or 100 columns for a pipe."""
    return display.stdout_console().width if sys.stdout.isatty() else 100


def _print_lines(lines: list[Text]) -> None:
    console = display.stdout_console()
    for line in lines:
        console.print(line, soft_wrap=True)


def _parse_rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``500k``, ``2M``, ``1048576``: bytes per second (k, M and G are powers of 1024, as curl's)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a rate such as 500k or 2M")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return max(1, int(float(match.group(1)) * scale))


_DURATION = re.compile(r"(\d+)\s*([smhdw])")


def _moment(value: str | None) -> str | None:
    """``--since 2h`` (s, m, h, d, w ago) as an ISO time; any other text goes to the API as it is."""
    if not value:
        return None
    match = _DURATION.fullmatch(value.strip())
    if not match:
        return value
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_parallelism(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    """``--parallelism 8`` or ``auto``: the API's ``parallelism`` (it says which numbers a kind takes)."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of segments or auto") from None
    if number < 1:
        raise click.BadParameter(f"{value!r}: at least 1 segment")
    return number


limit_rate_option = click.option(
    "--limit-rate", metavar="RATE", callback=_parse_rate,
    help="Download at most RATE bytes per second (500k, 2M), like curl's --limit-rate.")


# -- the group -------------------------------------------------------------------------------------


@click.group(epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--api-url", metavar="URL", expose_value=False, callback=_set_api_url, help=API_URL_HELP)
@click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json, help=JSON_HELP)
@click.version_option(package_name="download-center", prog_name="dlc")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """dlc: ask the Download Center for exports, follow them, and download the files.

    A session: `dlc login`, then `dlc create demo -p rows=100000 --wait
    --download` builds an export, shows its progress and saves the file,
    checked against its md5 and sha256. `dlc ls` lists your tasks. Every
    command takes --json for scripts; `dlc COMMAND --help` tells more.
    """
    ctx.ensure_object(State)


# -- sign-in ---------------------------------------------------------------------------------------


@cli.command()
@click.option("-u", "--username", help="Who signs in (asked for when left out, on a terminal).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin (for scripts: never put it in argv).")
@common
def login(username: str | None, password_stdin: bool) -> None:
    """Sign in and keep the tokens for this API.

    Cognito's USER_PASSWORD_AUTH, as the web console does: the API's
    /console/config.json says where Cognito is, and dlc says where it signs in
    (the API, and that Cognito endpoint) before it asks for the password. Both
    must be https://, or on this machine (127.0.0.1, ::1, localhost). The tokens are
    stored in the user's config directory, readable by you only (0600), and
    the ID token is refreshed with the refresh token when it expires. Without
    --password-stdin the password is asked for on the terminal, unechoed.
    """
    state = _state()
    interactive = sys.stdin.isatty()
    if not username and (password_stdin or not interactive):
        raise click.UsageError("--username is needed when stdin is not a terminal")
    if not password_stdin and not interactive:
        raise click.UsageError("no terminal to ask for the password: use --password-stdin")
    # where the password would go, checked (and shown) before it is asked for or read
    client = state.client()
    config = client.sign_in_config()
    if not password_stdin:
        click.echo(printable(f"Signing in to {client.api_url} (from {state.api_source}) through Cognito at "
                             f"{config['cognito_endpoint']}"), err=True)
    if not username:
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on stdin")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    tokens = client.login(username, password, config=config)
    expires = datetime.fromtimestamp(tokens.expires_at, UTC).isoformat(timespec="seconds")
    emit({"api_url": client.api_url, "username": tokens.username, "expires_at": expires,
          "tokens_file": str(state.store.path)},
         lambda: _print(display.shown(f"Signed in to {client.api_url} as {tokens.username} "
                                      f"(tokens in {state.store.path})")))


@cli.command()
@common
def logout() -> None:
    """Sign out of this API: revoke the refresh token at Cognito, forget the tokens.

    Revoked, a copy of the refresh token can no longer sign in; if Cognito cannot be told,
    the tokens are still deleted here and the command says so (exit 1, not_revoked).
    Sign-ins to other APIs stay.
    """
    client = _state().client()
    revocable = client.tokens is not None and bool(client.tokens.refresh_token)
    removed = client.logout()
    revoked = removed and revocable
    emit({"api_url": client.api_url, "signed_out": removed, "revoked": revoked},
         lambda: _print(display.shown(
             f"Signed out of {client.api_url}" + (" (its refresh token revoked)" if revoked else "")
             if removed else f"Not signed in to {client.api_url}")))


# -- reading ---------------------------------------------------------------------------------------


@cli.command()
@common
def kinds() -> None:
    """The kinds of export you may ask for.

    Each with its formats, its parameters (for `dlc create -p`) and an example.
    """
    items = _state().client().kinds()
    emit({"items": items}, lambda: _print_lines(display.kinds_view(items, _width())))


@cli.command(name="ls")
@click.option("-s", "--status", "statuses", multiple=True, metavar="STATUS",
              help="queued, running, canceling, succeeded, failed, canceled or expired "
                   "(repeat it or separate with commas).")
@click.option("-k", "--kind", help="Only tasks of this kind.")
@click.option("-n", "--name", "task_name", help="Task names containing this (any case).")
@click.option("--file-name", help="File names containing this (any case).")
@click.option("--since", metavar="TIME", help="Created at or after TIME: ISO 8601, or 30m, 2h, 7d, 1w ago.")
@click.option("--until", metavar="TIME", help="Created at or before TIME: ISO 8601, or 30m, 2h, 7d, 1w ago.")
@click.option("--limit", type=click.IntRange(1, 100), help="Tasks per page (the API's default is 20).")
@click.option("--cursor", help="Go on from a previous page (`next_cursor`).")
@click.option("-a", "--all", "follow", is_flag=True, help="Follow the pages to the end: every matching task.")
@common
def list_tasks(statuses: tuple[str, ...], kind: str | None, task_name: str | None, file_name: str | None,
               since: str | None, until: str | None, limit: int | None, cursor: str | None,
               follow: bool) -> None:
    """Your tasks, newest first (one page unless --all)."""
    client = _state().client()
    status = ",".join(part.strip() for value in statuses for part in value.split(",")) or None
    filters: dict[str, Any] = {"status": status, "kind": kind, "task_name": task_name,
                               "file_name": file_name, "created_after": _moment(since),
                               "created_before": _moment(until), "limit": limit}
    if follow:
        items, next_cursor = list(client.iter_all(**filters)), None
    else:
        page = client.list(cursor=cursor, **filters)
        items, next_cursor = page.items, page.next_cursor

    def human() -> None:
        if not items:
            _print(Text("No tasks." if not next_cursor else "No tasks on this page.", style="dim"))
        else:
            _print(display.tasks_table(items))
        if next_cursor:
            again = ["dlc", "ls", "--cursor", next_cursor]
            window = (("--since", filters["created_after"]), ("--until", filters["created_before"]))
            for option, value in window:
                if value:
                    again += [option, value]
            _print(display.shown("More: " + " ".join(again) + "  (or --all)", style="dim"))

    emit({"items": items, "next_cursor": next_cursor}, human)


@cli.command()
@click.argument("task_id", metavar="ID")
@common
def get(task_id: str) -> None:
    """Show one task.

    Its status, progress, file, checksums, times, error and warnings.
    """
    task = _state().client().get(task_id)
    emit(task, lambda: _print_lines(display.task_details(task, _width())))


# -- changing ----------------------------------------------------------------------------------------


def _task_result(task: Task) -> None:
    emit(task, lambda: _print(display.task_line(task)))


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("name")
@common
def rename(task_id: str, name: str) -> None:
    """Give a task a new name.

    Its file keeps the name it was built under.
    """
    _task_result(_state().client().rename(task_id, name))


@cli.command()
@click.argument("task_id", metavar="ID")
@common
def cancel(task_id: str) -> None:
    """Cancel a queued or running task.

    A queued task is canceled at once; a running one is `canceling` until its
    build stops.
    """
    _task_result(_state().client().cancel(task_id))


@cli.command()
@click.argument("task_id", metavar="ID")
@common
def retry(task_id: str) -> None:
    """Queue a failed or canceled task again."""
    _task_result(_state().client().retry(task_id))


@cli.command()
@click.argument("task_id", metavar="ID")
@common
def rm(task_id: str) -> None:
    """Delete a task and its file.

    Not while it runs: cancel it first.
    """
    _state().client().delete(task_id)
    emit({"deleted": task_id}, lambda: _print(display.shown(f"Deleted task {task_id}")))


# -- create, watch, download ---------------------------------------------------------------------


def _follow(client: Client, task: Task, cancel_on_interrupt: bool) -> Task:
    """Wait for the task's end with the live bar; a Ctrl-C stops waiting, and says how to go on."""
    task_id = str(task["id"])
    with display.WaitDisplay(display.progress_enabled()) as bar:
        bar.update(task)
        try:
            return client.wait(task_id, on_update=bar.update)
        except KeyboardInterrupt:
            pass
    if cancel_on_interrupt:
        try:
            canceled = client.cancel(task_id)
            message = f"stopped waiting and canceled task {task_id} (now {canceled.get('status')})"
        except DlcError as exc:
            message = f"stopped waiting; could not cancel task {task_id}: {exc.code}: {exc.message}"
    else:
        message = (f"stopped waiting; task {task_id} goes on. Follow it with: dlc watch {task_id} "
                   f"(cancel it with: dlc cancel {task_id})")
    raise Interrupted("interrupted", message, details={"task_id": task_id})


def _download(client: Client, task: Task, output: str | None, force: bool, limit_rate: int | None,
              resume_command: str) -> DownloadResult | PartsResult:
    """The verified download with its bar; a Ctrl-C keeps the partial file and says how to resume."""
    if is_parts(task):
        return _download_parts(client, task, output, force, limit_rate, resume_command)
    label = str(task.get("file_name") or task.get("id"))
    with display.DownloadDisplay(display.progress_enabled(), label) as bar:
        try:
            return client.download(task, output, force=force, on_start=bar.start, on_progress=bar.advance,
                                   limit_rate=limit_rate)
        except KeyboardInterrupt:
            done = bar.done
    with contextlib.suppress(OSError, KeyError):  # what is on disk, written past the last report
        done = part_path(target_path(task, output)).stat().st_size
    raise Interrupted("interrupted",
                      f"download stopped at byte {done:,} of {int(task.get('size') or 0):,}; "
                      f"run `{resume_command}` to resume it",
                      details={"task_id": task.get("id"), "offset": done})


def _download_parts(client: Client, task: Task, output: str | None, force: bool, limit_rate: int | None,
                    resume_command: str) -> PartsResult:
    """Every file of a task in parts, and its manifest, a bar each; a Ctrl-C keeps what was saved."""
    folder = parts_folder(task, output)
    with display.DownloadDisplay(display.progress_enabled(), str(task.get("file_name") or task["id"])) as bar:
        try:
            return client.download_parts(task, folder, force=force, on_file=bar.file, on_start=bar.start,
                                         on_progress=bar.advance, limit_rate=limit_rate)
        except KeyboardInterrupt:
            done, name, index, count = bar.done, bar.name, bar.index, bar.count
    with contextlib.suppress(OSError):  # what is on disk, written past the last report
        done = part_path(folder / name).stat().st_size
    raise Interrupted("interrupted",
                      f"download stopped in {name} (file {index} of {count}) at byte {done:,}; the files "
                      f"before it are saved in {folder}; run `{resume_command}` to resume it",
                      details={"task_id": task.get("id"), "file": name, "offset": done, "path": str(folder)})


def _finish(task: Task, result: DownloadResult | PartsResult | None) -> None:
    """The end of create --wait, watch and download: the task, and the file when there is one."""
    if task.get("status") != "succeeded":
        error = TaskNotSucceeded(task)
        error.json_doc = task
        raise error
    if result is None:
        emit(task, lambda: _print(display.task_line(task)))
        return

    def human() -> None:
        _print(display.task_line(task))
        if isinstance(result, PartsResult):
            kept = f"; {len(result.kept)} of them already there, kept" if result.kept else ""
            _print(display.shown(f"Saved {len(result.files)} files and {result.manifest.path.name} in "
                                 f"{result.path} ({display.decimal(result.size)}; each file's md5 and "
                                 f"sha256 verified, and the manifest's list of them{kept})"))
            return
        whole = [name for name in result.verified if name != "ranges"]
        checked = " and ".join(whole) + " verified" if whole else ""
        if result.ranges:
            each = f"{result.ranges} ranges verified, each by its md5 and sha256"
            checked = f"{checked}; {each}" if checked else each
        checked = checked or "no checksums to verify"
        resumed = f"; resumed at byte {result.resumed_from:,}" if result.resumed_from else ""
        _print(display.shown(f"Saved {result.path} ({display.decimal(result.size)}; {checked}{resumed})"))

    emit({"task": task, "download": result.to_json()}, human)


def _resume_command(task_id: str, output: str | None) -> str:
    import shlex

    return shlex.join(["dlc", "download", task_id, *(["-o", str(output)] if output else [])])


def _check_target(task: Task, output: str | None, force: bool, created: bool = True) -> None:
    """Refuse early, before a long wait (or before creating the task), to download onto a file.

    A task in parts goes into a folder, where each file is checked as it comes (one already there
    and whole is kept, as after an interrupted download).
    """
    if force or is_parts(task) or task.get("output") == "parts":
        return
    if not created and (output is None or Path(output).is_dir() or output.endswith(os.sep)):
        return  # the file's name is not known before the task is created
    target = target_path(task, output)
    if target.exists():
        after = f"; task {task['id']} goes on: dlc watch {task['id']} -o OTHER_PATH" if created else ""
        raise UsageError("file_exists",
                         f"{target} already exists (pass --force to overwrite it, or -o another path){after}")


@cli.command()
@click.argument("kind")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter, typed by the kind's schema: rows=1000 is a number, "
                   'columns=\'["id","name"]\' (or columns=id,name) a list. Repeatable.')
@click.option("--params-file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="The params as a JSON object (- for stdin); -p values go on top.")
@click.option("-f", "--format", "fmt", metavar="FORMAT",
              help="One of the kind's formats (its first by default).")
@click.option("--name", "task_name", help="The task's name (default: the kind and the -p values).")
@click.option("--file-name", help="The file's name (default: made from the task's name).")
@click.option("--idempotency-key", metavar="KEY",
              help="Send the same key again to get the same task back instead of a second one.")
@click.option("--parallelism", metavar="N|auto", callback=_parse_parallelism,
              help="Build it in N segments side by side (1 to 32, as the kind allows), or auto "
                   "(the API's default: as many as its size needs).")
@click.option("--parts/--single", "parts", default=None,
              help="The API's output: --parts makes one file per segment and a manifest.json; "
                   "--single (the default) one file.")
@click.option("-w", "--wait", is_flag=True, help="Follow the build with a progress bar until it ends.")
@click.option("-d", "--download", is_flag=True, help="Then download the file (implies --wait).")
@click.option("-o", "--output", type=click.Path(dir_okay=True),
              help="Where to save it: a file, or a directory for the file's own name; with --parts, the "
                   "folder for the files (implies --download).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--cancel-on-interrupt", is_flag=True, help=INTERRUPT_HELP)
@limit_rate_option
@common
def create(kind: str, pairs: tuple[str, ...], params_file: Any, fmt: str | None, task_name: str | None,
           file_name: str | None, idempotency_key: str | None, parallelism: int | str | None,
           parts: bool | None, wait: bool, download: bool, output: str | None, force: bool,
           cancel_on_interrupt: bool, limit_rate: int | None) -> None:
    """Ask for an export; --wait follows it, --download saves it.

    KIND is one of `dlc kinds`. Without --wait it prints the queued task at once. Ctrl-C while waiting
    stops waiting (the export goes on: `dlc watch ID`) and exits 130. --parallelism and --parts ask
    for a segmented build (`dlc kinds` says which kinds and formats split); a task in parts is
    downloaded as a folder of its files and manifest.json.
    """
    client = _state().client()
    base = None
    if params_file is not None:
        try:
            base = json.load(params_file)
        except ValueError as exc:
            raise UsageError("invalid_params_file", f"{params_file.name}: not JSON ({exc})") from exc
        if not isinstance(base, dict):
            raise UsageError("invalid_params_file", f"{params_file.name}: params must be a JSON object")
    params = None
    if pairs or base is not None:
        schema = client.kind(kind).get("params_schema") or {}
        params = typed_params(schema, pairs, base=base, kind=kind)
    download = download or output is not None
    wait = wait or download
    split = {"parallelism": parallelism,
             "output": None if parts is None else ("parts" if parts else "single")}
    if download:
        _check_target({"id": "", "file_name": "", "output": split["output"]}, output, force, created=False)
    name = task_name or " ".join([kind, *pairs])[:200]
    task = client.create(kind, params=params, task_name=name, format=fmt, file_name=file_name,
                         idempotency_key=idempotency_key, **split)
    if not wait:
        emit(task, lambda: _print(display.task_line(task),
                                  display.shown(f"Follow it with: dlc watch {task['id']}")))
        return
    if download:
        _check_target(task, output, force)
    task = _follow(client, task, cancel_on_interrupt)
    result = None
    if download and task.get("status") == "succeeded":
        result = _download(client, task, output, force, limit_rate, _resume_command(task["id"], output))
    _finish(task, result)


@cli.command()
@click.argument("task_id", metavar="ID")
@click.option("-d", "--download", is_flag=True, help="Download the file when the task succeeds.")
@click.option("-o", "--output", type=click.Path(dir_okay=True),
              help="Where to save it: a file, or a directory; for a task in parts, its folder "
                   "(implies --download).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--cancel-on-interrupt", is_flag=True, help=INTERRUPT_HELP)
@limit_rate_option
@common
def watch(task_id: str, download: bool, output: str | None, force: bool, cancel_on_interrupt: bool,
          limit_rate: int | None) -> None:
    """Follow one task to its end, with a progress bar.

    Exits 0 if it succeeded, 1 if it failed or was canceled; --download then
    saves the file as `dlc download` does.
    """
    client = _state().client()
    task = client.get(task_id)
    download = download or output is not None
    if download and task.get("status") not in ("failed", "canceled", "expired"):
        _check_target(task, output, force)
    task = _follow(client, task, cancel_on_interrupt)
    result = None
    if download and task.get("status") == "succeeded":
        result = _download(client, task, output, force, limit_rate, _resume_command(task_id, output))
    _finish(task, result)


@cli.command(name="download")
@click.argument("task_id", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=True),
              help="A file, or a directory for the file's own name (default: its name, here); for a task "
                   "in parts, the folder for its files (default: their stem, here).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@limit_rate_option
@common
def download_file(task_id: str, output: str | None, force: bool, limit_rate: int | None) -> None:
    """Save a task's file: verified, resumable, under its own name.

    The task's own (UTF-8) file name, here, unless -o says otherwise. The
    bytes go to a hidden .NAME.dlc-part file beside the target; if that is
    interrupted, the same command picks it up where it stopped (an HTTP Range
    request, with a fresh link when the old one has expired). The file takes
    its name only once its md5 and sha256 match the task's; a mismatch
    deletes the partial file and exits 5. A single file built in segments has
    no checksum of the whole but one per byte range: each range must match
    (a mismatch names its segment and bytes). An existing file is kept unless
    --force.

    A task in parts (built with --parts) is saved as a folder: each file, so
    fetched and verified against its own checksums, then manifest.json, whose
    list must match the files (else exit 5). A file already there and whole is
    kept, so running the command again after an interruption fetches only the
    rest.
    """
    client = _state().client()
    task = client.get(task_id)
    result = _download(client, task, output, force, limit_rate, _resume_command(task_id, output))
    _finish(task, result)


# -- the entry point ---------------------------------------------------------------------------------


def _report(error: DlcError, as_json: bool) -> int:
    if as_json:
        doc = error.json_doc
        click.echo(json.dumps(doc if doc is not None else error.to_json(), ensure_ascii=False, indent=2))
    click.echo(printable(f"{error.code}: {error.message}"), err=True)
    return error.exit_code


def run(argv: list[str] | None = None) -> int:
    """Run ``dlc`` with ``argv``; the exit code (every error reported as ``code: message``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    try:
        result = cli.main(args=args, prog_name="dlc", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        return _report(UsageError("usage", exc.format_message() + hint), as_json)
    except click.Abort:
        # Ctrl-C outside a wait or a download (at a prompt, in a request)
        return _report(Interrupted("interrupted", "stopped by Ctrl-C"), as_json)
    except click.ClickException as exc:
        error = DlcError("error", exc.format_message())
        error.exit_code = exc.exit_code
        return _report(error, as_json)
    except DlcError as exc:
        return _report(exc, as_json)
    except KeyboardInterrupt:
        return _report(Interrupted("interrupted", "stopped by Ctrl-C"), as_json)
    except OSError as exc:  # the disk's: a folder that cannot be written, a full disk
        return _report(DlcError("io_error", str(exc)), as_json)
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("DLC_DEBUG"):
            traceback.print_exc()
        return _report(DlcError("internal_error", f"{exc.__class__.__name__}: {exc}"), as_json)
    return result if isinstance(result, int) else 0


def main() -> NoReturn:
    """The console script ``dlc``."""
    sys.exit(run())

