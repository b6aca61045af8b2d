"""End to end through ``make run``'s stack, over real HTTP and real Cognito tokens.

The stack runs as its own process (see conftest.py); this talks to it only
the way a client would: InitiateAuth on the moto endpoint, the API on its
port, the presigned URL it hands out. The last test stops the stack with
SIGINT and checks that it goes away cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import signal
import socket
import subprocess
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from moto.utilities.utils import load_resource

from tests.e2e.conftest import PROJECT_DIR, RunningStack, id_token

HTTP_TIMEOUT = 30
BUILD_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


def assert_error(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.fixture(scope="module")
def alice(local_stack: RunningStack) -> dict[str, str]:
    return {"Authorization": id_token(local_stack, "alice")}


@pytest.fixture(scope="module")
def alice_task(local_stack: RunningStack, alice: dict[str, str]) -> dict[str, Any]:
    """A demo export created by alice and built by the worker through the queue."""
    body = {
        "task_name": "e2e 导出",
        "kind": "demo",
        "format": "csv",
        "params": {"rows": 20000, "seed": 7},
        "notify": {"email": True},
    }
    resp = requests.post(f"{local_stack.api}/downloads", json=body, headers=alice, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 202, resp.text
    task = resp.json()
    assert resp.headers["Location"] == f"/downloads/{task['id']}"

    deadline = time.monotonic() + BUILD_TIMEOUT
    while task["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            pytest.fail(f"task still {task['status']} after {BUILD_TIMEOUT:.0f} s:\n{local_stack.log_tail()}")
        time.sleep(0.3)
        # "Bearer <token>" is accepted as well as the bare token.
        resp = requests.get(
            f"{local_stack.api}/downloads/{task['id']}",
            headers={"Authorization": f"Bearer {alice['Authorization']}"},
            timeout=HTTP_TIMEOUT,
        )
        assert resp.status_code == 200, resp.text
        task = resp.json()
    assert task["status"] == "succeeded", f"{task}\n{local_stack.log_tail()}"
    return task


def test_health(local_stack: RunningStack) -> None:
    resp = requests.get(f"{local_stack.api}/health", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_stack_file_describes_the_stack(local_stack: RunningStack) -> None:
    info = local_stack.info
    assert set(info) == {
        "api_url",
        "console_url",
        "aws_endpoint_url",
        "region",
        "table",
        "bucket",
        "queue_url",
        "dlq_url",
        "event_bus",
        "user_pool_id",
        "client_id",
        "users",
        "demo_table",
        "sample_bucket",
        "sample_log_group",
    }
    assert info["api_url"].startswith("http://127.0.0.1:")
    assert info["console_url"] == info["api_url"] + "/"
    assert info["aws_endpoint_url"].startswith("http://127.0.0.1:")
    assert info["demo_table"] == "demo-users"
    assert (info["sample_bucket"], info["sample_log_group"]) == ("demo-files", "/demo/app")
    users = {u["username"]: u for u in info["users"]}
    assert set(users) == {"alice", "bob", "carol", "dave", "admin"}
    assert users["carol"]["tenant"] == "globex"
    assert users["admin"]["groups"] == ["admin"]
    assert (users["dave"]["groups"], users["dave"]["tenant"]) == (["tenant-admin"], "acme")
    assert len({u["password"] for u in info["users"]}) == 5


def test_export_round_trip(
    local_stack: RunningStack, alice: dict[str, str], alice_task: dict[str, Any]
) -> None:
    task_id = alice_task["id"]
    redirect = requests.get(
        f"{local_stack.api}/downloads/{task_id}/file",
        headers=alice,
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert redirect.status_code == 302, redirect.text
    url = redirect.headers["Location"]
    assert url.startswith(local_stack.info["aws_endpoint_url"]), url

    download = requests.get(url, timeout=HTTP_TIMEOUT)
    assert download.status_code == 200, download.text[:500]
    data = download.content
    assert len(data) == alice_task["size"]
    assert hashlib.sha256(data).hexdigest() == alice_task["sha256"]
    assert hashlib.md5(data).hexdigest() == alice_task["md5"]
    data.decode("utf-8")  # the CSV is UTF-8

    disposition = download.headers["Content-Disposition"]
    assert disposition.lower().startswith("attachment")
    match = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition, re.IGNORECASE)
    assert match, disposition
    assert unquote(match.group(1), encoding="utf-8") == alice_task["file_name"]
    assert "导出" in alice_task["file_name"]


def test_worker_logs_reach_the_console(local_stack: RunningStack, alice_task: dict[str, Any]) -> None:
    log = local_stack.log()
    assert "build_worker" in log
    assert alice_task["id"] in log


def test_another_user_cannot_see_the_task(local_stack: RunningStack, alice_task: dict[str, Any]) -> None:
    bob = {"Authorization": id_token(local_stack, "bob")}
    for path in (f"/downloads/{alice_task['id']}", f"/downloads/{alice_task['id']}/file"):
        resp = requests.get(
            f"{local_stack.api}{path}", headers=bob, allow_redirects=False, timeout=HTTP_TIMEOUT
        )
        assert_error(resp, 404, "not_found")


@pytest.mark.parametrize("user,sees", [("dave", True), ("carol", False), ("admin", True)])
def test_roles_with_real_tokens(
    local_stack: RunningStack, alice_task: dict[str, Any], user: str, sees: bool
) -> None:
    """dave (tenant-admin of acme) sees alice's task through his real token's groups; carol does not."""
    headers = {"Authorization": id_token(local_stack, user)}
    resp = requests.get(f"{local_stack.api}/downloads/{alice_task['id']}", headers=headers,
                        timeout=HTTP_TIMEOUT)
    if sees:
        assert resp.status_code == 200 and resp.json()["owner_name"] == "alice"
    else:
        assert_error(resp, 404, "not_found")
    listed = requests.get(f"{local_stack.api}/downloads", headers=headers, timeout=HTTP_TIMEOUT).json()
    assert (alice_task["id"] in {t["id"] for t in listed["items"]}) is sees


@pytest.mark.parametrize(
    "authorization",
    [
        "garbage",
        "Bearer garbage",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4IiwidG9rZW5fdXNlIjoiaWQifQ.c2ln",
    ],
)
def test_bad_token_is_401(local_stack: RunningStack, authorization: str) -> None:
    resp = requests.get(
        f"{local_stack.api}/downloads",
        headers={"Authorization": authorization},
        timeout=HTTP_TIMEOUT,
    )
    assert_error(resp, 401, "unauthorized")


def test_tampered_token_is_401(local_stack: RunningStack, alice: dict[str, str]) -> None:
    header, payload, signature = alice["Authorization"].split(".")
    forged = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    resp = requests.get(
        f"{local_stack.api}/downloads", headers={"Authorization": forged}, timeout=HTTP_TIMEOUT
    )
    assert_error(resp, 401, "unauthorized")


def test_missing_token_is_401(local_stack: RunningStack) -> None:
    resp = requests.get(f"{local_stack.api}/downloads", timeout=HTTP_TIMEOUT)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def expired_copy(token: str) -> str:
    """The token, an hour past its expiry, signed with the key moto signs every token with."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    an_hour_ago = int(time.time()) - 3600
    claims |= {"iat": an_hour_ago - 3600, "exp": an_hour_ago}
    key = RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))
    return jwt.encode({"alg": "RS256", "kid": "dummy"}, claims, key)


def test_expired_token_is_401_token_expired(local_stack: RunningStack, alice: dict[str, str]) -> None:
    resp = requests.get(
        f"{local_stack.api}/downloads",
        headers={"Authorization": f"Bearer {expired_copy(alice['Authorization'])}"},
        timeout=HTTP_TIMEOUT,
    )
    assert_error(resp, 401, "token_expired")
    assert resp.json()["error"]["message"] == "Your sign-in has expired; sign in again"
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def missing_route_body() -> dict[str, Any]:
    """The body the deployment's MISSING_AUTHENTICATION_TOKEN gateway response sends."""
    template = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text(encoding="utf-8"))
    spec = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]["MISSING_AUTHENTICATION_TOKEN"]
    return json.loads(spec["ResponseTemplates"]["application/json"])


def assert_missing_route(resp: requests.Response) -> None:
    """What API Gateway answers for a path the API does not have, or a method it cannot route."""
    assert_error(resp, 404, "not_found")
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"  # as the app's
    assert resp.json() == missing_route_body()
    assert "Allow" not in resp.headers  # API Gateway sends none


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/downloads/x/file/more"),
        ("TRACE", "/downloads"),
        ("PROPFIND", "/health"),
        ("BREW", "/nope"),
    ],
)
@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "alice"])
def test_no_such_route_is_the_gateway_404(
    local_stack: RunningStack, alice: dict[str, str], method: str, path: str, signed_in: bool
) -> None:
    headers = {"Authorization": f"Bearer {alice['Authorization']}"} if signed_in else {}
    resp = requests.request(
        method, f"{local_stack.api}{path}", headers=headers, json={}, timeout=HTTP_TIMEOUT
    )
    assert_missing_route(resp)
    # chalice local's own answer quoted the Authorization header back
    assert alice["Authorization"].split(".")[2] not in resp.text + str(resp.headers)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/downloads", "GET, POST"),
        ("DELETE", "/downloads", "GET, POST"),
        ("PUT", "/downloads/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", "GET, PATCH, DELETE"),
        ("GET", "/downloads/x/cancel", "POST"),
        ("POST", "/downloads/x/file", "GET, HEAD"),
        ("OPTIONS", "/kinds", "GET"),
    ],
)
def test_a_method_the_path_lacks_is_405(
    local_stack: RunningStack, alice: dict[str, str], method: str, path: str, allow: str
) -> None:
    url = f"{local_stack.api}{path}"
    resp = requests.request(method, url, headers=alice, data=b"<x/>", timeout=HTTP_TIMEOUT)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == allow
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    # without a token: sign in first, as for the path's own methods
    assert_error(requests.request(method, url, timeout=HTTP_TIMEOUT), 401, "unauthorized")


def test_the_405_of_a_public_path_needs_no_token(local_stack: RunningStack) -> None:
    resp = requests.post(f"{local_stack.api}/health", timeout=HTTP_TIMEOUT)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET"


def read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers and whatever bytes came after them, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return status, headers, rest


def test_a_head_answer_has_no_body(local_stack: RunningStack) -> None:
    """HEAD /health (a 405: only GET): headers only, and the kept-alive connection stays usable.

    A raw socket, because HTTP clients hide a body sent after a HEAD response
    (urllib3 drops the connection, http.client drops its read buffer).
    """
    api = urlsplit(local_stack.api)
    with socket.create_connection((api.hostname, api.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: local\r\n\r\n")
        status, headers, rest = read_head(sock)
        assert status.split()[1] == "405", status
        assert headers["allow"] == "GET"
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert int(headers["content-length"]) > 0  # the length of the body it leaves out
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            rest += sock.recv(65536)
        assert rest == b"", "a body after a HEAD response"
        sock.settimeout(HTTP_TIMEOUT)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: local\r\n\r\n")  # same connection
        status, headers, body = read_head(sock)
        assert status.split()[1] == "200", status
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
        assert json.loads(body) == {"status": "ok"}


def test_head_of_a_file_is_where_get_redirects(
    local_stack: RunningStack, alice: dict[str, str], alice_task: dict[str, Any]
) -> None:
    url = f"{local_stack.api}/downloads/{alice_task['id']}/file"
    head = requests.head(url, headers=alice, allow_redirects=False, timeout=HTTP_TIMEOUT)
    get = requests.get(url, headers=alice, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert (head.status_code, get.status_code) == (302, 302), head.headers
    assert head.content == b""
    assert urlsplit(head.headers["Location"]).path == urlsplit(get.headers["Location"]).path
    assert head.headers["Location"].startswith(local_stack.info["aws_endpoint_url"])
    # and the file is there, as large as the task says
    size = requests.head(head.headers["Location"], timeout=HTTP_TIMEOUT).headers["Content-Length"]
    assert int(size) == alice_task["size"]


def test_a_raw_utf8_query_filters_like_the_encoded_one(
    local_stack: RunningStack, alice: dict[str, str], alice_task: dict[str, Any]
) -> None:
    """``?task_name=导出`` as curl sends it (raw UTF-8 bytes) finds what ``%E5%AF%BC%E5%87%BA`` finds."""
    encoded = requests.get(f"{local_stack.api}/downloads", params={"task_name": "导出"},
                           headers=alice, timeout=HTTP_TIMEOUT)
    assert alice_task["id"] in {t["id"] for t in encoded.json()["items"]}, encoded.text
    api = urlsplit(local_stack.api)
    with socket.create_connection((api.hostname, api.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall("GET /downloads?task_name=导出 HTTP/1.1\r\n".encode()
                     + f"Host: local\r\nAuthorization: {alice['Authorization']}\r\n"
                       "Connection: close\r\n\r\n".encode())
        status, headers, body = read_head(sock)
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
    assert status.split()[1] == "200", (status, body)
    # the same tasks (a presigned URL or a running task's progress may differ from one second to the next)
    raw_ids = [t["id"] for t in json.loads(body)["items"]]
    assert raw_ids == [t["id"] for t in encoded.json()["items"]]


def test_options_is_a_405_and_on_an_unknown_path_the_gateway_404(local_stack: RunningStack) -> None:
    """No CORS: OPTIONS is a method like the others (API Gateway would 404 it otherwise)."""
    resp = requests.options(f"{local_stack.api}/health", timeout=HTTP_TIMEOUT)
    assert_error(resp, 405, "method_not_allowed")
    assert_missing_route(requests.options(f"{local_stack.api}/nope", timeout=HTTP_TIMEOUT))


def built(local_stack: RunningStack, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = requests.post(f"{local_stack.api}/downloads", headers=headers, timeout=HTTP_TIMEOUT,
                         json={"task_name": "segments", "kind": "demo", **body})
    assert resp.status_code == 202, resp.text
    task = resp.json()
    deadline = time.monotonic() + BUILD_TIMEOUT
    while task["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"{task}\n{local_stack.log_tail()}"
        time.sleep(0.3)
        task = requests.get(f"{local_stack.api}/downloads/{task['id']}", headers=headers,
                            timeout=HTTP_TIMEOUT).json()
    assert task["status"] == "succeeded", f"{task}\n{local_stack.log_tail()}"
    return task


def one_worker_sha256(params: dict[str, Any], fmt: str) -> str:
    """The file one worker writes for these params, made here, in this process."""
    from chalicelib.config import Settings
    from chalicelib.exporters import BuildContext
    from chalicelib.exporters.demo import DemoExporter

    digest = hashlib.sha256()
    for chunk in DemoExporter().stream(params, fmt, BuildContext(Settings())):
        digest.update(chunk)
    return digest.hexdigest()


def test_a_segmented_export_is_one_file_over_http(local_stack: RunningStack, alice: dict[str, str]) -> None:
    params = {"rows": 150_000, "seed": 3}
    task = built(local_stack, alice, params=params, parallelism=3)
    assert task["progress"]["segments"] == {"total": 3, "succeeded": 3, "running": 0, "failed": 0}
    redirect = requests.get(f"{local_stack.api}/downloads/{task['id']}/file", headers=alice,
                            allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert redirect.status_code == 302
    data = requests.get(redirect.headers["Location"], timeout=HTTP_TIMEOUT).content
    assert hashlib.sha256(data).hexdigest() == one_worker_sha256(params, "csv")  # one worker's bytes
    assert task["sha256"] is None and task["md5"] is None and len(data) == task["size"]
    for r in task["ranges"]:  # what a client checks instead: each segment's range
        piece = data[r["start"]:r["start"] + r["size"]]
        assert hashlib.sha256(piece).hexdigest() == r["sha256"] and hashlib.md5(piece).hexdigest() == r["md5"]
    assert [r["segment"] for r in task["ranges"]] == [1, 2, 3]


def test_a_parts_export_hands_out_every_file_and_the_manifest(
    local_stack: RunningStack, alice: dict[str, str]
) -> None:
    task = built(local_stack, alice, format="jsonl", params={"rows": 30_000, "compression": "gzip"},
                 parallelism=2, output="parts", file_name="users")
    assert task["url"] is None and [f["name"] for f in task["files"]] == [
        "users-00001-of-00002.jsonl.gz", "users-00002-of-00002.jsonl.gz"]
    manifest = requests.get(task["manifest"]["url"], timeout=HTTP_TIMEOUT)
    assert hashlib.sha256(manifest.content).hexdigest() == task["manifest"]["sha256"]
    listed = manifest.json()["files"]
    for part, entry in zip(task["files"], listed, strict=True):
        got = requests.get(part["url"], timeout=HTTP_TIMEOUT)
        assert hashlib.sha256(got.content).hexdigest() == part["sha256"] == entry["sha256"]
        assert unquote(re.search(r"filename\*=UTF-8''([^;\s]+)", got.headers["Content-Disposition"])
                       .group(1)) == part["name"]
    file_route = requests.get(f"{local_stack.api}/downloads/{task['id']}/file", headers=alice,
                              allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert_error(file_route, 409, "multiple_files")


def sent_mail(local_stack: RunningStack) -> list[dict[str, Any]]:
    """What moto's SES has "sent" (its model data, over HTTP)."""
    data = requests.get(f"{local_stack.info['aws_endpoint_url']}/moto-api/data.json", timeout=HTTP_TIMEOUT)
    return data.json()["ses"]["Message"]


def test_the_owner_is_mailed_once_when_the_export_is_ready(
    local_stack: RunningStack, alice_task: dict[str, Any],
) -> None:
    """The task's event reaches the notifier through a rule on the stack's bus, as deployed."""
    deadline = time.monotonic() + 20
    while not (mails := [m for m in sent_mail(local_stack) if alice_task["task_name"] in m["subject"]]):
        assert time.monotonic() < deadline, f"no mail:\n{local_stack.log_tail()}"
        time.sleep(0.3)
    (mail,) = mails
    assert mail["destinations"]["ToAddresses"] == ["alice@acme.example"]
    assert mail["subject"] == f'Your export "{alice_task["task_name"]}" is ready'
    assert f"{local_stack.api}/" in mail["body"]  # the console
    assert alice_task["url"].split("?")[0] not in mail["body"] and "X-Amz-" not in mail["body"]


def test_sigint_stops_everything(local_stack: RunningStack) -> None:
    """Ctrl-C: exit status 0 within the timeout, stack file gone, ports released."""
    proc = local_stack.proc
    assert proc.poll() is None, local_stack.log_tail()
    proc.send_signal(signal.SIGINT)
    try:
        status = proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_TIMEOUT:.0f} s after SIGINT:\n{local_stack.log_tail()}")
    assert status == 0, local_stack.log_tail()
    assert not local_stack.stack_file.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{local_stack.api}/health", timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(local_stack.info["aws_endpoint_url"], timeout=5)
