"""``python -m local.demo``: one round trip through the running local stack.

Logs in, asks for an export, waits for the worker to build it, follows the
download redirect and checks the file against the task's size and sha256, so
a newcomer sees every part working (and what the API looks like) in one go.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from typing import Any

import requests

from local.login import id_token
from local.stackfile import read_stack_file

TERMINAL = {"succeeded", "failed", "canceled", "expired"}


def _show(label: str, resp: requests.Response) -> Any:
    print(f"{label} -> {resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="alice")
    parser.add_argument("--kind", choices=["demo", "dynamodb_table"], default="demo")
    parser.add_argument("--rows", type=int, default=1000, help="rows for the demo kind")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args(argv)

    stack = read_stack_file()
    api = stack["api_url"]
    token = id_token(args.user, stack)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    print(f"logged in as {args.user} (ID token from Cognito on {stack['aws_endpoint_url']})")

    if args.kind == "demo":
        body = {
            "task_name": "本地试用 demo",
            "kind": "demo",
            "format": "csv",
            "params": {"rows": args.rows, "seed": 1},
        }
    else:
        body = {
            "task_name": "用户数据导出",
            "kind": "dynamodb_table",
            "format": "csv",
            "params": {"table": stack["demo_table"], "columns": ["id", "name", "city"]},
        }
    print("POST /downloads", json.dumps(body, ensure_ascii=False))
    task = _show("POST /downloads", session.post(f"{api}/downloads", json=body, timeout=30))
    if not task or "id" not in task:
        print(json.dumps(task, ensure_ascii=False, indent=2))
        return 1

    deadline = time.monotonic() + args.timeout
    while task.get("status") not in TERMINAL:
        if time.monotonic() > deadline:
            print(f"still {task.get('status')} after {args.timeout:.0f} s; is the worker running?")
            return 1
        time.sleep(0.5)
        task = session.get(f"{api}/downloads/{task['id']}", timeout=30).json()
    print(json.dumps({k: v for k, v in task.items() if k != "url"}, ensure_ascii=False, indent=2))
    if task["status"] != "succeeded":
        return 1

    redirect = session.get(f"{api}/downloads/{task['id']}/file", allow_redirects=False, timeout=30)
    print(f"GET /downloads/{task['id']}/file -> {redirect.status_code}")
    data = requests.get(redirect.headers["Location"], timeout=60)
    digest = hashlib.sha256(data.content).hexdigest()
    ok = len(data.content) == task["size"] and digest == task["sha256"]
    print(
        f"downloaded {len(data.content)} bytes, sha256 {digest} "
        f"({'matches the task' if ok else 'DOES NOT MATCH the task'})"
    )
    print(f"Content-Disposition: {data.headers.get('Content-Disposition')}")
    print("first lines:")
    for line in data.content.decode("utf-8", "replace").splitlines()[:3]:
        print("  " + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
