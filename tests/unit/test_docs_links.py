"""The repository is all a user gets: every relative link in its Markdown resolves inside it.

Checked for every ``*.md`` the repository tracks: ``[text](target)`` and
``![alt](target)`` links and ``<img src>``; a target outside the repository
(``../elsewhere/...``), a missing file, or a ``#fragment`` that names no heading
of the target fails. The code's own pointers to documents (``see
docs/local-stack.md``) are held to the same rule.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img[^>]+src=\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:
DOC_MENTION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", pattern],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*?", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCE.sub("", markdown.read_text(encoding="utf-8"))
    return {slug(h) for h in HEADING.findall(text)}


def links(markdown: Path) -> list[str]:
    text = FENCE.sub("", markdown.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return LINK.findall(text) + IMG.findall(text)


def broken(markdown: Path, target: str) -> str | None:
    if EXTERNAL.match(target):
        return None
    path_part, _, fragment = target.partition("#")
    resolved = (markdown.parent / path_part).resolve() if path_part else markdown
    if not resolved.is_relative_to(REPO):
        return "points outside the repository"
    if not resolved.exists():
        return "does not exist"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
        return f"#{fragment} names no heading of {resolved.relative_to(REPO)}"
    return None


MARKDOWN = tracked("*.md")


def test_the_repository_has_markdown_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in MARKDOWN}
    assert {"README.md", "docs/local-stack.md", "docs/queue-messages.md"} <= names


@pytest.mark.parametrize("markdown", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_inside_the_repository(markdown: Path) -> None:
    problems = [f"{target}: {why}" for target in links(markdown) if (why := broken(markdown, target))]
    assert not problems, f"{markdown.relative_to(REPO)}: " + "; ".join(problems)


def test_documents_named_in_the_code_exist() -> None:
    sources = [p for p in tracked("*.py") if p.resolve() != Path(__file__).resolve()]
    missing = []
    for source in sources:
        for name in DOC_MENTION.findall(source.read_text(encoding="utf-8")):
            if not any(p.as_posix().endswith("/" + name) or p.name == name for p in MARKDOWN):
                missing.append(f"{source.relative_to(REPO)} names {name}")
    assert not missing, "; ".join(missing)


@pytest.mark.parametrize(("target", "why"), [
    ("../../elsewhere/API.md", "points outside the repository"),
    ("docs/nowhere.md", "does not exist"),
    ("#no-such-heading", "#no-such-heading names no heading of README.md"),
])
def test_the_checker_catches_what_it_should(target: str, why: str) -> None:
    assert broken(REPO / "README.md", target) == why


def test_github_slugs() -> None:
    assert slug("Limits, and how to raise them") == "limits-and-how-to-raise-them"
    assert slug("`make test` and CI") == "make-test-and-ci"
    assert slug("`dynamodb_table`: columns, row order") == "dynamodb_table-columns-row-order"
