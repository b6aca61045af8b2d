"""The segments section's probe: times the segmented finish inside the local stack's worker processes.

The bench puts this directory on the stack's ``PYTHONPATH``, so every Python
process of that stack imports it at start-up; it does nothing unless
``BENCH_FINISH_PROBE`` names a file. Then, when ``chalicelib.segmented`` and
``chalicelib.adapters.storage`` are imported, it wraps the finish's steps
(``Segmented.finalize``, ``Segmented._single``, ``Segmented._rebuild``,
``Segmented._succeed``, ``storage.list_parts``, ``storage.complete_upload``,
``Outcomes.clear``, ``publish_terminal``) and appends one JSON line
per call to that file: the step, the task, wall start and end, the process. The
service's code is not changed; only the bench's stack carries the probe.
"""

from __future__ import annotations

import os

PROBE = os.environ.get("BENCH_FINISH_PROBE")

if PROBE:
    import functools
    import importlib.abc
    import json
    import sys
    import time
    from collections.abc import Callable
    from typing import Any

    def _record(**fields: Any) -> None:
        fd = os.open(PROBE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:  # one write of one line, appended: lines of several processes do not interleave
            os.write(fd, (json.dumps(fields) + "\n").encode())
        finally:
            os.close(fd)

    def _timed(fn: Callable[..., Any], step: str, task_of: Callable[..., str],
               extra: Callable[..., dict[str, Any]] = lambda *a, **k: {}) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            ok = False
            try:
                out = fn(*args, **kwargs)
                ok = True
                return out
            finally:
                _record(step=step, task=task_of(*args, **kwargs), start=start, end=time.time(),
                        ok=ok, pid=os.getpid(), **extra(*args, **kwargs))
        return wrapper

    def _task_of_key(bucket: str, key: str, *args: Any, **kwargs: Any) -> str:
        return key.split("/")[2] if key.count("/") >= 3 else key  # downloads/{tenant}/{task}/...

    def _task_of_self(self: Any, task: Any, *args: Any, **kwargs: Any) -> str:
        return str(task.id)

    def _patch_storage(module: Any) -> None:
        module.list_parts = _timed(module.list_parts, "list_parts", _task_of_key)
        module.complete_upload = _timed(module.complete_upload, "complete_upload", _task_of_key,
                                        lambda b, k, u, parts, *a, **kw: {"parts": len(parts)})

    def _patch_segmented(module: Any) -> None:
        cls = module.Segmented
        cls.finalize = _timed(cls.finalize, "finalize", _task_of_self)
        cls._single = _timed(cls._single, "single", _task_of_self)
        cls._succeed = _timed(cls._succeed, "succeed", _task_of_self)
        cls._make = _timed(cls._make, "rebuild", _task_of_self)  # joined or built again here
        module.publish_terminal = _timed(module.publish_terminal, "publish",
                                         lambda settings, repo, task, *a, **k: str(task.id))

    def _patch_outcomes(module: Any) -> None:
        module.Outcomes.clear = _timed(module.Outcomes.clear, "clear", _task_of_self)

    _PATCHES = {"chalicelib.adapters.storage": _patch_storage, "chalicelib.segmented": _patch_segmented,
                "chalicelib.outcomes": _patch_outcomes}

    class _Finder(importlib.abc.MetaPathFinder):
        """Finds nothing itself: wraps the real loader of the two modules to patch them once run."""

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in _PATCHES:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    break
            else:
                return None
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                _PATCHES[name](module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
