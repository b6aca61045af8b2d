"""The API's description, as ``GET /openapi.json`` serves it.

``docs/openapi.yaml`` is the one source. The Lambda package carries it as
``chalicelib/openapi.json``, which ``tools.package`` writes from that file (so
the function needs no YAML parser); a local run, where no such file exists,
reads the YAML itself.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGED = Path(__file__).resolve().parent / "openapi.json"
SOURCE = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
#: the packaged file's name inside the code package
PACKAGED_NAME = "chalicelib/openapi.json"


@cache
def document() -> dict[str, Any]:
    if PACKAGED.exists():
        return json.loads(PACKAGED.read_text(encoding="utf-8"))
    import yaml  # a development dependency: only a local run reads the YAML

    return yaml.safe_load(SOURCE.read_text(encoding="utf-8"))


def served(api_root: str) -> dict[str, Any]:
    """The document with this deployment's root as its only server."""
    return {**document(), "servers": [{"url": api_root, "description": "this deployment"}]}
