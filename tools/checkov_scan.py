"""Run checkov on the packaged template, offline: ``python -m tools.checkov_scan out/sam.json``.

checkov pins ``boto3`` (and ``networkx``) to versions this project's own
environment cannot have, so it lives in a virtualenv of its own,
``.venv-checkov`` (``make test`` builds it from ``requirements-checkov.txt``),
and runs as a child process. ``$CHECKOV`` names another executable.

It must never reach the network: ``--skip-download`` and ``BC_SKIP_MAPPING``
keep it from fetching Bridgecrew/Prisma guidelines and policies, no API key is
passed on (so nothing is uploaded), ``CKV_SKIP_PACKAGE_UPDATE_CHECK`` stops
its PyPI version check, and the proxy variables point at a closed loopback
port so that anything it would still try fails at once instead of leaving.

Checks that do not apply are skipped in the template itself, each with its
reason, in the resource's ``Metadata.checkov.skip`` (where checkov reads it):
a skip is reviewed with the resource it belongs to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKOV_VENV = PROJECT_ROOT / ".venv-checkov"
FRAMEWORK = "cloudformation"  # SAM templates are checkov's cloudformation framework too
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, requests fail fast
TIMEOUT_SECONDS = 300

# Variables that would connect checkov to a Bridgecrew/Prisma Cloud account.
PLATFORM_VARIABLES = ("BC_API_KEY", "PRISMA_API_URL", "BC_API_URL", "CKV_API_KEY")


class CheckovError(Exception):
    """checkov is missing, or did not produce a report."""


@dataclass(frozen=True)
class Finding:
    """One failed or skipped check on one resource."""

    check_id: str
    resource: str
    name: str
    comment: str = ""


@dataclass
class Report:
    """What checkov says about one template."""

    passed: int
    failed: list[Finding] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)
    parsing_errors: int = 0
    resource_count: int = 0
    version: str = ""

    def summary(self) -> str:
        """One line for a human; deliberately not pytest's 'N passed, N failed' shape."""
        return (
            f"checkov {self.version} {FRAMEWORK}: passed={self.passed} failed={len(self.failed)} "
            f"skipped={len(self.skipped)} resources={self.resource_count}"
        )


def find_checkov() -> Path | None:
    """``$CHECKOV``, else the project's checkov virtualenv, else one on PATH."""
    configured = os.environ.get("CHECKOV")
    if configured:
        return Path(configured)
    local = CHECKOV_VENV / "bin" / "checkov"
    if local.is_file():
        return local
    found = shutil.which("checkov")
    return Path(found) if found else None


def offline_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment checkov runs with: no platform account, no update check, no way out."""
    env = dict(os.environ if base is None else base)
    for name in PLATFORM_VARIABLES:
        env.pop(name, None)
    env.update(
        {
            "BC_SKIP_MAPPING": "TRUE",
            "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
            "HTTP_PROXY": CLOSED_PORT_PROXY,
            "HTTPS_PROXY": CLOSED_PORT_PROXY,
            "http_proxy": CLOSED_PORT_PROXY,
            "https_proxy": CLOSED_PORT_PROXY,
            "NO_PROXY": "",
            "no_proxy": "",
            "LOG_LEVEL": "WARNING",  # checkov's own logging; the app's LOG_LEVEL must not leak in
        }
    )
    return env


def scan(template: Path, checkov: Path | None = None) -> Report:
    """Run checkov on ``template`` and return its report (failed checks included)."""
    executable = checkov or find_checkov()
    if executable is None or not executable.exists():
        raise CheckovError(
            "checkov not found: run `make test` (it builds .venv-checkov from "
            "requirements-checkov.txt) or set CHECKOV to its executable"
        )
    command = [
        str(executable),
        "--file", str(template),
        "--framework", FRAMEWORK,
        "--skip-download",
        "--output", "json",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=offline_env(),
        timeout=TIMEOUT_SECONDS, check=False,
    )
    # Exit status 1 only means "some check failed"; anything else is checkov failing.
    if result.returncode not in (0, 1):
        raise CheckovError(f"checkov exited {result.returncode}:\n{result.stderr[-4000:]}")
    try:
        output = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise CheckovError(f"checkov printed no JSON report: {exc}\n{result.stderr[-4000:]}") from None
    return parse_report(output)


def parse_report(output: Any) -> Report:
    """checkov's JSON for the cloudformation framework as a :class:`Report`."""
    reports = output if isinstance(output, list) else [output]
    matching = [r for r in reports if isinstance(r, dict) and r.get("check_type") == FRAMEWORK]
    if not matching:
        # checkov prints a bare summary when it found nothing to scan at all
        raise CheckovError(f"checkov reported no {FRAMEWORK} results: {json.dumps(output)[:2000]}")
    (report,) = matching
    results = report.get("results", {})
    summary = report.get("summary", {})
    return Report(
        passed=int(summary.get("passed", 0)),
        failed=[_finding(c) for c in results.get("failed_checks", [])],
        skipped=[_finding(c) for c in results.get("skipped_checks", [])],
        parsing_errors=int(summary.get("parsing_errors", 0)),
        resource_count=int(summary.get("resource_count", 0)),
        version=str(summary.get("checkov_version", "")),
    )


def _finding(check: dict[str, Any]) -> Finding:
    return Finding(
        check_id=str(check.get("check_id", "")),
        resource=str(check.get("resource", "")),
        name=str(check.get("check_name", "")),
        comment=str(check.get("check_result", {}).get("suppress_comment", "") or ""),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the summary and every failed check; exit 1 if any failed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tools.checkov_scan TEMPLATE", file=sys.stderr)
        return 2
    try:
        report = scan(Path(args[0]))
    except CheckovError as exc:
        print(f"checkov_scan: {exc}", file=sys.stderr)
        return 2
    for finding in report.failed:
        print(f"FAILED {finding.check_id} {finding.resource}: {finding.name}")
    for finding in report.skipped:
        print(f"skipped {finding.check_id} {finding.resource}: {finding.comment}")
    print(report.summary())
    return 1 if report.failed or report.parsing_errors else 0


if __name__ == "__main__":
    sys.exit(main())
