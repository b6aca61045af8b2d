"""``python -m tests.e2e.build_once STACK_FILE OWNER ROWS``: one worker process, to be killed.

It stores a demo task for OWNER against the running local stack's AWS
(without a build message, so the stack's own poller leaves it alone), prints
its id, and builds it with the real worker, as a Lambda invocation would.
The test SIGKILLs it mid-build: nothing in this process gets to clean up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(stack_file: str, owner: str, rows: int) -> None:
    stack = json.loads(Path(stack_file).read_text(encoding="utf-8"))
    from local.stack import point_aws_at, resource_env

    point_aws_at(stack["aws_endpoint_url"], stack["region"])
    import os

    os.environ.update(resource_env(stack))
    os.environ["PROGRESS_INTERVAL_SECONDS"] = "0.5"
    from chalicelib.adapters.tasks_repo import configure
    from chalicelib.config import Settings
    from chalicelib.services import Owner
    from chalicelib.validation import parse_create
    from chalicelib.worker import Worker

    settings = Settings.from_env()
    configure(settings.tasks_table)
    worker = Worker(settings)
    body = {"task_name": "killed mid-build", "kind": "demo", "params": {"rows": rows}}
    task, _ = worker.downloads.store_new(Owner(owner, "alice", "acme"), parse_create(body), body, None)
    print(task.id, flush=True)
    worker.build(task.id)
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
