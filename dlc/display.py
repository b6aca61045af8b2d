"""What ``dlc`` shows people: tables, task details, and the live progress bars.

Kept apart from the commands so that ``cli.py`` stays a thin layer of
argument handling. Progress goes to stderr and only when stderr is a
terminal: a script that pipes or captures it sees nothing but errors and
the notes it needs (how to resume), and ``--json`` output stays one document
on stdout either way. Every piece of user data is rendered as plain text,
never as rich markup (a task named ``[red]x`` shows those characters), and
through :func:`shown` (or :func:`dlc.sanitize.printable`): without control or
format characters, so a name cannot move the cursor, colour the screen, fake a
line of the listing or reverse what follows it.
"""

from __future__ import annotations

import shlex
import sys
import textwrap
import time
from datetime import datetime
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from dlc.sanitize import printable

STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "canceling": "magenta",
    "succeeded": "green",
    "failed": "bold red",
    "canceled": "dim",
    "expired": "dim",
}


def stdout_console() -> Console:
    """Stdout; a pipe gets a wide, colourless table rather than one cut at 80 columns."""
    return Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


def progress_enabled() -> bool:
    """Live progress only for a person watching: stderr must be a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def shown(value: Any, style: str = "") -> Text:
    """A value from the API as a line of plain text that shows as it is (see :func:`printable`)."""
    return Text(printable(value), style=style)


def status_text(status: str | None) -> Text:
    return shown(status or "?", style=STATUS_STYLES.get(str(status), ""))


def when(value: str | None, seconds: bool = True) -> str:
    """An API timestamp in the local time zone, to the second (or minute); '' for none."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return printable(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def progress_summary(task: dict[str, Any]) -> str:
    """'1,000 rows, 98.3 kB, 42%, 3 of 8 segments done' (what is known of it)."""
    progress = task.get("progress") or {}
    parts = []
    if progress.get("rows") is not None:
        parts.append(f"{int(progress['rows']):,} rows")
    if progress.get("bytes") is not None:
        parts.append(decimal(int(progress["bytes"])))
    if progress.get("percent") is not None:
        parts.append(f"{float(progress['percent']):.0f}%")
    segments = segments_summary(task)
    if segments:
        parts.append(segments)
    return ", ".join(parts)


def segments_summary(task: dict[str, Any], short: bool = False) -> str:
    """A build in segments: '3 of 8 segments done, 2 running' (short: '3/8 segments'); '' otherwise.

    Said while the task has not succeeded: once it has, its file (or files) say what it became.
    """
    seg = (task.get("progress") or {}).get("segments")
    if not isinstance(seg, dict) or not seg.get("total") or task.get("status") in ("succeeded", "expired"):
        return ""
    done, total = int(seg.get("succeeded") or 0), int(seg["total"])
    if short:
        return f"{done}/{total} segments"
    words = [f"{done} of {total} segments done"]
    if seg.get("running") and task.get("status") in ("running", "canceling"):
        words.append(f"{int(seg['running'])} running")
    if seg.get("failed"):
        words.append(f"{int(seg['failed'])} failed")
    return ", ".join(words)


def files_summary(task: dict[str, Any]) -> str:
    """'4 files, 7.0 MB' for a task in parts; '' for one file."""
    files = task.get("files") or []
    if not files:
        return ""
    return f"{len(files)} files, {decimal(sum(int(f.get('size') or 0) for f in files))}"


def task_line(task: dict[str, Any]) -> Text:
    """One sentence on a task: what became of it."""
    line = Text()
    line.append(printable(f"Task {task.get('id')} "))
    line.append(printable(f"“{task.get('task_name')}” "))
    line.append_text(status_text(task.get("status")))
    status = task.get("status")
    if status == "succeeded" and task.get("files"):
        line.append(printable(f": {task.get('file_name')} in {files_summary(task)}"))
        rows = (task.get("progress") or {}).get("rows")
        if rows is not None:
            line.append(f", {int(rows):,} rows")
    elif status == "succeeded":
        line.append(printable(f": {task.get('file_name')}, {decimal(int(task.get('size') or 0))}"))
        rows = (task.get("progress") or {}).get("rows")
        if rows is not None:
            line.append(f", {int(rows):,} rows")
    elif task.get("error"):
        error = task["error"]
        line.append(printable(f": {error.get('code')}: {error.get('message')}"))
    elif status in ("queued", "running", "canceling"):
        summary = progress_summary(task)
        if summary:
            line.append(f" ({summary})")
    return line


def tasks_table(items: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    table.add_column("KIND", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("SIZE / PROGRESS", justify="right", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for task in items:
        status = task.get("status")
        if status in ("succeeded", "expired") and task.get("size") is not None:
            amount = decimal(int(task["size"]))
            if task.get("files"):
                amount += f" in {len(task['files'])} files"
        else:
            percent = (task.get("progress") or {}).get("percent")
            amount = f"{float(percent):.0f}%" if percent is not None and status != "failed" else ""
            segments = segments_summary(task, short=True)
            if segments:
                amount = f"{amount} ({segments})" if amount else segments
        table.add_row(shown(task.get("id")), shown(task.get("task_name")),
                      shown(f"{task.get('kind')}/{task.get('format')}"), status_text(status),
                      Text(amount), Text(when(task.get("created_at"), seconds=False)))
    return table


def kv_lines(rows: list[tuple[str, Any]], width: int, label_style: str = "bold") -> list[Text]:
    """Label and value lines, values wrapped under themselves (no padding at the end of a line)."""
    rows = [(label, value) for label, value in rows if value not in (None, "")]
    pad = max((len(label) for label, _ in rows), default=0) + 2
    lines = []
    for label, value in rows:
        text = value if isinstance(value, Text) else shown(value)
        wrapped = textwrap.wrap(text.plain, max(20, width - pad), break_on_hyphens=False) or [""]
        if len(wrapped) == 1:
            lines.append(Text.assemble((label.ljust(pad), label_style), text))
            continue
        lines.append(Text.assemble((label.ljust(pad), label_style), wrapped[0]))
        lines.extend(Text(" " * pad + more) for more in wrapped[1:])
    return lines


def task_details(task: dict[str, Any], width: int) -> list[Text]:
    rows: list[tuple[str, Any]] = [
        ("id", task.get("id")),
        ("name", task.get("task_name")),
        ("kind", f"{task.get('kind')} ({task.get('format')})"),
        ("status", status_text(task.get("status"))),
        ("progress", progress_summary(task)),
        ("file", task.get("file_name")),
    ]
    if task.get("size") is not None:
        rows.append(("size", f"{decimal(int(task['size']))} ({int(task['size']):,} bytes)"))
    if task.get("parallelism") not in (None, "auto") or task.get("output") not in (None, "single"):
        rows.append(("build", f"parallelism {task.get('parallelism')}, output {task.get('output')}"))
    ranges = task.get("ranges") or []
    rows += [
        ("md5", task.get("md5")),
        ("sha256", task.get("sha256")),
        ("ranges", ranges_summary(task)),
        ("params", shlex.join(f"{k}={_plain(v)}" for k, v in (task.get("params") or {}).items())),
        ("owner", task.get("owner_name")),
        ("attempts", task.get("attempts")),
        ("created", when(task.get("created_at"))),
        ("started", when(task.get("started_at"))),
        ("finished", when(task.get("finished_at"))),
        ("expires", when(task.get("expires_at"))),
    ]
    if task.get("error"):
        rows.append(("error", f"{task['error'].get('code')}: {task['error'].get('message')}"))
    for warning in task.get("warnings") or []:
        rows.append(("warning", f"{warning.get('field')}: {warning.get('message')}"))
    if task.get("status") == "succeeded":
        into = " (a folder of its files and manifest.json, each verified)" if task.get("files") else ""
        if ranges and not task.get("files"):
            into = f" (verified by its {len(ranges)} ranges)"
        rows.append(("download", f"dlc download {task.get('id')}{into}"))
    if task.get("files"):
        rows.append(("files", files_summary(task)))
    lines = kv_lines(rows, width)
    pad = max(len(label) for label, value in rows if value not in (None, "")) + 2
    if ranges and not task.get("files"):
        # under the 'ranges' line, before what follows it
        at = next(i for i, line in enumerate(lines) if line.plain.startswith("ranges "))
        while at + 1 < len(lines) and lines[at + 1].plain.startswith(" "):
            at += 1
        lines[at + 1:at + 1] = range_lines(ranges, pad)
    if task.get("files"):
        lines += file_lines(task, pad)
    return lines


def ranges_summary(task: dict[str, Any]) -> str:
    """A single file built in segments: 'verified by 3 ranges, ...' (it has no sha256 of the whole)."""
    ranges = task.get("ranges") or []
    if not ranges or task.get("files"):
        return ""
    whole = "" if task.get("sha256") else " (built in segments: none of the whole)"
    return f"verified by {len(ranges)} ranges, each with its md5 and sha256{whole}"


def range_lines(ranges: list[dict[str, Any]], pad: int) -> list[Text]:
    """Each range under the 'ranges' line: its segment, bytes, size and rows, then its checksums."""
    lines = []
    for entry in ranges:
        start, size = int(entry.get("start") or 0), int(entry.get("size") or 0)
        where = f"bytes {start:,}-{start + size - 1:,}" if size else f"no bytes, at {start:,}"
        about = f"segment {entry.get('segment')}  {where}  {decimal(size)}"
        if entry.get("rows") is not None:
            about += f", {int(entry['rows']):,} rows"
        lines.append(shown(" " * pad + about))
        for algorithm in ("md5", "sha256"):
            if entry.get(algorithm):
                lines.append(shown(" " * (pad + 2) + f"{algorithm} {entry[algorithm]}", style="dim"))
    return lines


def file_lines(task: dict[str, Any], pad: int) -> list[Text]:
    """A task in parts, under its 'files' line: each file (name, size, rows; then its checksums,
    whole, to compare), then the manifest."""
    lines = []
    for entry in [*(task.get("files") or []), task.get("manifest")]:
        if not entry:
            continue
        about = decimal(int(entry.get("size") or 0))
        if entry.get("rows") is not None:
            about += f", {int(entry['rows']):,} rows"
        lines.append(shown(" " * pad + f"{entry.get('name')}  {about}"))
        for algorithm in ("md5", "sha256"):
            if entry.get(algorithm):
                lines.append(shown(" " * (pad + 2) + f"{algorithm} {entry[algorithm]}", style="dim"))
    return lines


def _plain(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def param_lines(kind: dict[str, Any]) -> list[tuple[str, str]]:
    """Each parameter of a kind and what it takes, in words."""
    schema = kind.get("params_schema") or {}
    required = set(schema.get("required") or [])
    lines = []
    for name, prop in (schema.get("properties") or {}).items():
        words = []
        if "enum" in prop:
            words.append(" | ".join(_plain(v) for v in prop["enum"]))
        elif prop.get("type"):
            declared = prop["type"]
            words.append(" or ".join(declared) if isinstance(declared, list) else str(declared))
            if declared == "array" and isinstance(prop.get("items"), dict) and prop["items"].get("type"):
                words[-1] = f"list of {prop['items']['type']}"
        if name in required:
            words.append("required")
        if "default" in prop:
            words.append(f"default {_plain(prop['default'])}")
        if "minimum" in prop and "maximum" in prop:
            words.append(f"{prop['minimum']} to {prop['maximum']}")
        elif "minimum" in prop:
            words.append(f"at least {prop['minimum']}")
        elif "maximum" in prop:
            words.append(f"at most {prop['maximum']}")
        text = ", ".join(words)
        if prop.get("description"):
            text = f"{text}: {prop['description']}" if text else str(prop["description"])
        lines.append((name, text))
    return lines


def example_command(kind: dict[str, Any]) -> str | None:
    """The kind's first example as a ``dlc create`` line to paste."""
    examples = (kind.get("params_schema") or {}).get("examples") or []
    if not examples or not isinstance(examples[0], dict):
        return None
    args = ["dlc", "create", str(kind.get("kind"))]
    for key, value in examples[0].items():
        args += ["-p", f"{key}={_plain(value)}"]
    return shlex.join(args)


def kinds_view(kinds: list[dict[str, Any]], width: int) -> list[Text]:
    lines: list[Text] = []
    for index, kind in enumerate(kinds):
        if index:
            lines.append(Text(""))
        lines.append(Text.assemble((printable(kind.get("kind")), "bold"), "  ",
                                   printable(kind.get("title") or "")))
        rows: list[tuple[str, Any]] = [("formats", ", ".join(kind.get("formats") or []))]
        split = kind.get("split")
        if isinstance(split, dict):
            outputs = "; ".join(f"{fmt}: {' or '.join(outs)}"
                                for fmt, outs in (split.get("outputs") or {}).items())
            rows.append(("segments", f"by {split.get('by')}, up to {split.get('max_segments')} "
                                     f"(--parallelism N, --parts); {outputs}"))
        sources = kind.get("sources") or {}
        if sources.get("param"):
            allowed = ", ".join(sources.get("allowed") or []) or "none"
            rows.append(("sources", f"{sources['param']}: {allowed}"))
        rows += [(f"-p {name}", words) for name, words in param_lines(kind)]
        example = example_command(kind)
        if example:
            rows.append(("example", example))
        lines += [Text("  ") + line for line in kv_lines(rows, width - 2, label_style="")]
    return lines


class WaitDisplay:
    """The live bar of a task being built: status, percent, rows, bytes and rows per second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Progress | None = None
        self.bar: TaskID | None = None
        self.first: tuple[float, int] | None = None
        self.rate = ""

    def __enter__(self) -> WaitDisplay:
        if self.enabled:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]}", markup=False),
                TextColumn("{task.fields[bytes]}", markup=False),
                TextColumn("{task.fields[rate]}", markup=False),
                TimeElapsedColumn(),
                console=stderr_console(),
            )
            self.progress.start()
            self.bar = self.progress.add_task("waiting", total=None, rows="", bytes="", rate="")
        return self

    def update(self, task: dict[str, Any]) -> None:
        if self.progress is None or self.bar is None:
            return
        progress = task.get("progress") or {}
        rows = int(progress.get("rows") or 0)
        now = time.monotonic()
        if task.get("status") == "running":
            if self.first is None:
                self.first = (now, rows)
            elif now > self.first[0] and rows > self.first[1]:
                self.rate = f"{(rows - self.first[1]) / (now - self.first[0]):,.0f} rows/s"
        percent = progress.get("percent")
        if task.get("status") == "succeeded":
            percent = 100
        name = printable(task.get("task_name") or task.get("id"))
        name = name if len(name) <= 32 else name[:31] + "…"
        segments = segments_summary(task, short=True)
        self.progress.update(
            self.bar,
            description=f"{name} · {printable(task.get('status'))}" + (f" · {segments}" if segments else ""),
            total=100 if percent is not None else None,
            completed=float(percent or 0),
            rows=f"{rows:,} rows",
            bytes=decimal(int(progress.get("bytes") or 0)),
            rate=self.rate,
        )

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()


class DownloadDisplay:
    """The live bar of a download: bytes of the total, speed and time left."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        #: the file being saved, as named (for its path), and as shown
        self.name = label
        self.label = printable(label)
        self.progress: Progress | None = None
        self.bar: TaskID | None = None
        #: the last byte written, for the "resume from" note after a Ctrl-C
        self.done = 0
        #: a task in parts: which file of how many is being saved (0 of 0: one file)
        self.index = 0
        self.count = 0

    def __enter__(self) -> DownloadDisplay:
        if self.enabled:
            self.progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
            )
            self.progress.start()
        return self

    def file(self, name: str, index: int, count: int) -> None:
        """The next of a task's files: the bars that follow are its (one bar a file)."""
        self.name, self.label, self.index, self.count, self.done = name, printable(name), index, count, 0

    def start(self, offset: int, size: int) -> None:
        self.done = offset
        if offset:
            # a note rather than progress: shown on a pipe too, so a log says the file was resumed
            console = self.progress.console if self.progress is not None else stderr_console()
            console.print(Text(f"Resuming {self.label} at byte {offset:,} of {size:,}"))
        if self.progress is not None:
            self.bar = self.progress.add_task(self.label, total=size, completed=offset)

    def advance(self, done: int, size: int) -> None:
        self.done = done
        if self.progress is not None and self.bar is not None:
            self.progress.update(self.bar, completed=done)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
