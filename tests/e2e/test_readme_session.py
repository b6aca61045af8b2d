"""The README's curl session, run as written against a real local stack.

Every fenced block the README marks with ``<!-- session: ... -->`` runs, in
order, in one ``bash`` with ``set -euo pipefail``, from a scratch folder that
looks like the repository's (``.venv`` there, the project importable). The
only change is the API's address: the stack under test listens on a free
port, not on 8000.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.e2e.conftest import PROJECT_DIR, RunningStack

README = PROJECT_DIR / "README.md"
DEFAULT_API = "http://127.0.0.1:8000"
MARKED_BLOCK = re.compile(r"^<!-- session:[^\n]*-->\n```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def session_blocks(text: str) -> list[str]:
    return MARKED_BLOCK.findall(text)


def test_the_readme_marks_its_curl_session() -> None:
    blocks = session_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no block marked <!-- session: ... -->"
    assert all(DEFAULT_API in block for block in blocks), "a session block talks to another address"


def test_the_readme_session_runs_as_written(local_stack: RunningStack, tmp_path: Path) -> None:
    script = "\n".join(session_blocks(README.read_text(encoding="utf-8")))
    script = script.replace(DEFAULT_API, local_stack.api)
    # the session calls .venv/bin/python from the repository's folder
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    env = {
        **os.environ,
        "STACK_FILE": str(local_stack.stack_file),
        "PYTHONPATH": str(PROJECT_DIR),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # step 4's sha256sum -c compared the downloaded bytes with the task's sha256
    assert "user_list_202405.csv: OK" in result.stdout
    rows = list(csv.reader(io.StringIO((tmp_path / "user_list_202405.csv").read_text(encoding="utf-8"))))
    assert rows[0] == ["id", "name", "city"]
    assert len(rows) == 1 + 10_000
    # "Try every kind": each task ended succeeded (`ends` fails the script otherwise), and the
    # bundle kept the sample bucket's UTF-8 and space-containing names
    names = zipfile.ZipFile(tmp_path / "reports-2024.zip").namelist()
    assert {"年度总结 2024.txt", "01/sales north.csv", "MANIFEST.csv"} <= set(names)
    assert len(names) == 12 * 4 + 2
